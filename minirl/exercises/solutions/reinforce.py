"""Notebook 03's coding exercise, answered (for teachers): the REINFORCE loss (paper Eq. 6)."""


def reinforce_loss(log_prob, advantages):
    """log_prob (N,) with gradient, advantages (N,) constants -> the scalar loss -mean(A log p), whose gradient
    is minus Eq. 6's estimate."""
    return -(advantages * log_prob).mean()
