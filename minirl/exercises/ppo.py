"""Checker for notebook 04's exercise: PPO's clipped surrogate (paper Eq. 7), value and gradient.

The student writes `ppo_loss(log_prob, old_log_prob, advantages, clip_range) -> loss`, the negated mean of
min(w A, clip(w, 1 - eps, 1 + eps) A) with w = exp(log_prob - old_log_prob); it is compared with
`minirl.losses.ppo_loss`, including its gradient with respect to log_prob (zero where the clip is active).
"""

import torch

from minirl import losses
from minirl.exercises import check
from minirl.exercises.reinforce import value_and_grad


def _cases():
    g = torch.Generator().manual_seed(4)
    cases = []
    for n, clip_range in ((8, 0.2), (64, 0.2), (64, 1e-4)):
        log_prob = -1.0 + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
        log_ratio = 3 * clip_range * (2 * torch.rand(n, generator=g, dtype=torch.float64) - 1)  # inside and outside
        advantages = torch.randn(n, generator=g, dtype=torch.float64)
        cases.append((log_prob, log_prob - log_ratio, advantages, clip_range))
    same = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)  # the first update: w = 1
    cases.append((same, same.clone(), torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64), 1e-4))
    return cases


DESCRIPTIONS = ("8 samples, eps 0.2, ratios inside and outside the clip range",
                "64 samples, eps 0.2: gradient 0 exactly where the clip is active",
                "64 samples, eps 1e-4 (the paper's clip range on per-dimension log-probs)",
                "the first update: log_prob = old_log_prob, w = 1, the gradient is REINFORCE's")


def check_ppo_loss(student_fn):
    """student_fn(log_prob (N,), old_log_prob (N,), advantages (N,), clip_range) -> scalar loss -J (Eq. 7)."""
    return check("ppo_loss (item 0: the loss, item 1: its gradient in log_prob)", value_and_grad(student_fn),
                 value_and_grad(losses.ppo_loss), _cases(), descriptions=DESCRIPTIONS)
