"""A solution of notebook 06's coding exercise: statistical parity, paper Eq. 12 (for teachers)."""

import torch


def statistical_parity(labels, num_classes):
    """labels (N,) class indices in [0, num_classes) -> SP = sum_a (share of class a - 1/|A|)^2."""
    shares = torch.bincount(labels, minlength=num_classes).float() / len(labels)  # classes never predicted: 0
    return ((shares - 1 / num_classes) ** 2).sum()
