"""Notebook 09's coding exercises, answered (for teachers): statistical parity from a classifier's probabilities,
and GenEval's relative position of two boxes. Written from the exercises' text, not from minirl.rewards."""

import torch


def soft_statistical_parity(probs):
    """probs (B, K), rows summing to 1 -> sum_a (mean_x p(a | x) - 1/K)^2."""
    shares = probs.mean(0)                                            # (K,): each class's soft share
    return ((shares - 1 / probs.shape[1]) ** 2).sum()


def relative_position(box_a, box_b):
    """Boxes (4,) as corners (x0, y0, x1, y1), y down -> the set of GenEval's positions of a relative to b."""
    offset = (box_a[:2] + box_a[2:]) / 2 - (box_b[:2] + box_b[2:]) / 2           # centre of a - centre of b
    dead_zone = 0.1 * ((box_a[2:] - box_a[:2]).abs() + (box_b[2:] - box_b[:2]).abs())
    shrunk = torch.sign(offset) * (offset.abs() - dead_zone).clamp(min=0)
    if not shrunk.any():
        return set()
    dx, dy = (shrunk / offset.norm()).tolist()                        # divided by the unshrunk offset's norm
    tests = {"left of": dx < -0.5, "right of": dx > 0.5, "above": dy < -0.5, "below": dy > 0.5}
    return {name for name, holds in tests.items() if holds}
