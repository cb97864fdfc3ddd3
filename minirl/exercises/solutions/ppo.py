"""Notebook 04's coding exercise, answered (for teachers): PPO's clipped surrogate (paper Eq. 7)."""

import torch


def ppo_loss(log_prob, old_log_prob, advantages, clip_range):
    """log_prob (N,) with gradient; old_log_prob, advantages (N,) constants -> the scalar loss
    -mean(min(w A, clip(w, 1 - eps, 1 + eps) A)) with w = p_theta / p_old."""
    w = torch.exp(log_prob - old_log_prob)                                   # (N,) importance ratio
    clipped = torch.clamp(w, 1 - clip_range, 1 + clip_range)
    return -torch.minimum(w * advantages, clipped * advantages).mean()
