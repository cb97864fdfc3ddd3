"""Checker for notebook 03's exercise: the REINFORCE loss (paper Eq. 6), value and gradient.

The student writes `reinforce_loss(log_prob, advantages) -> loss`, a scalar tensor whose gradient with respect
to log_prob is the likelihood-ratio estimator; it is compared with `minirl.losses.reinforce_loss`.
"""

import torch

from minirl import losses
from minirl.exercises import check


def value_and_grad(loss_fn):
    """Wrap loss_fn(log_prob, *rest) -> loss (or (loss, info)) into a function returning (loss, d loss / d log_prob),
    so that a checker compares the gradient autograd takes through log_prob, not only the value."""
    def run(log_prob, *rest):
        log_prob = log_prob.detach().clone().requires_grad_(True)
        out = loss_fn(log_prob, *rest)
        loss = out[0] if isinstance(out, (tuple, list)) else out
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
            raise TypeError(f"the loss must be a scalar tensor; got {type(loss).__name__} "
                            f"of shape {tuple(getattr(loss, 'shape', ()))}")
        if not loss.requires_grad:
            raise ValueError("the loss has no gradient with respect to log_prob (was log_prob detached, or "
                             "the value taken out with .item()?)")
        (grad,) = torch.autograd.grad(loss, log_prob)
        return loss.detach(), grad
    return run


def _cases():
    g = torch.Generator().manual_seed(3)
    cases = []
    for n in (1, 5, 64):
        log_prob = 1.5 + 0.01 * torch.randn(n, generator=g, dtype=torch.float64)  # log-probs near the tiny world's
        advantages = torch.randn(n, generator=g, dtype=torch.float64)
        cases.append((log_prob, advantages))
    cases.append((torch.tensor([0.3, -2.0, 1.0], dtype=torch.float64), torch.tensor([0.0, 0.0, 0.0],
                                                                                    dtype=torch.float64)))
    return cases


DESCRIPTIONS = ("one sample", "5 samples", "64 samples: a mean over the batch, not a sum",
                "all advantages 0: the loss and its gradient are 0")


def check_reinforce_loss(student_fn):
    """student_fn(log_prob (N,), advantages (N,)) -> scalar loss whose gradient is -mean(A * grad log p)."""
    return check("reinforce_loss (item 0: the loss, item 1: its gradient in log_prob)", value_and_grad(student_fn),
                 value_and_grad(losses.reinforce_loss), _cases(), descriptions=DESCRIPTIONS)
