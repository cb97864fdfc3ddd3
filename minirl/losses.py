"""The RL losses, as pure functions that read like the paper's equations. Each returns (loss, info).

Notation: log_prob = log p_theta(x_{t-1} | x_t, c) under the current weights, old_log_prob the same at
sampling time (theta_old), advantages A (paper Eq. 10). All per-transition tensors have shape (N,): the
functions check it, since (N,) against (N, 1) would broadcast to (N, N) and average the wrong products.
Losses are minimised, so they are the negated objectives J.
References: REINFORCE (Williams 1992; DDPO Eq. 6 / paper Eq. 6), PPO (Schulman et al. 2017; paper Eq. 7),
L_pre (paper Eq. 9), KL to the reference model (DPOK, Fan et al. 2023).
"""

import math

import torch


def reinforce_loss(log_prob, advantages):
    """-E[A * log p_theta]: its gradient is the likelihood-ratio (score-function) estimator
    -E[A * grad log p_theta] -- autograd differentiates log_prob, so "grad log p" is never written out."""
    _check_transitions(log_prob=log_prob, advantages=advantages)
    loss = -(advantages * log_prob).mean()
    return loss, {"loss": loss.detach()}


def ppo_loss(log_prob, old_log_prob, advantages, clip_range):
    """PPO's clipped surrogate with importance ratio w = p_theta / p_theta_old (paper Eq. 7):
    J = E[min(w A, clip(w, 1 - eps, 1 + eps) A)]. Returns (-J, info with approx_kl, clipfrac, ratio)."""
    _check_transitions(log_prob=log_prob, old_log_prob=old_log_prob, advantages=advantages)
    if not (math.isfinite(clip_range) and clip_range > 0):
        raise ValueError(f"clip_range must be > 0 and finite (PPO's epsilon; DDPO uses 1e-4); got {clip_range}")
    ratio = torch.exp(log_prob - old_log_prob)                           # w, (N,)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - clip_range, 1 + clip_range) * advantages
    loss = -torch.minimum(unclipped, clipped).mean()
    with torch.no_grad():
        log_ratio = log_prob - old_log_prob
        info = {
            "loss": loss.detach(),
            "approx_kl": 0.5 * (log_ratio**2).mean(),  # as DDPO logs it; 2nd-order estimate of KL(old || new)
            "clipfrac": ((ratio - 1).abs() > clip_range).float().mean(),
            "ratio": ratio.mean(),
        }
    return loss, info


def denoising_loss(model_pred, target):
    """L_pre (paper Eq. 9): the ordinary diffusion loss ||eps - eps_theta(x_t, t, c)||^2 on pretraining data,
    the mean over all elements; model_pred and target of the same shape."""
    if model_pred.shape != target.shape:
        raise ValueError(f"model_pred and target must have the same shape; got {tuple(model_pred.shape)} and "
                         f"{tuple(target.shape)}")
    loss = torch.nn.functional.mse_loss(model_pred.float(), target.float())
    return loss, {"pretrain_loss": loss.detach()}


def kl_to_reference(mean, ref_mean, sigma, reduce="mean"):
    """KL(p_theta || p_ref) of one step: both Gaussians share sigma_t, so it is ||mu - mu_ref||^2 / (2 sigma_t^2),
    averaged ("mean") or summed ("sum") over dimensions like the log-probability, then averaged over the N
    transitions. mean, ref_mean (N, ...) of the same shape, sigma (N,) > 0."""
    if reduce not in ("mean", "sum"):
        raise ValueError(f"reduce must be 'mean' or 'sum'; got {reduce!r}")
    if mean.ndim < 2 or mean.shape != ref_mean.shape or sigma.shape != mean.shape[:1]:
        raise ValueError(f"mean and ref_mean must have the same shape (N, ...) and sigma shape (N,); got mean "
                         f"{tuple(mean.shape)}, ref_mean {tuple(ref_mean.shape)}, sigma {tuple(sigma.shape)}")
    if not bool((sigma > 0).all()):
        raise ValueError(f"sigma must be > 0 (a step with sigma_t = 0 has no density); got "
                         f"{sigma[~(sigma > 0)].tolist()}")
    sigma = sigma.reshape(-1, *([1] * (mean.ndim - 1)))
    kl = ((mean.float() - ref_mean.float()) ** 2 / (2 * sigma.float() ** 2)).flatten(1)
    kl = kl.mean(1) if reduce == "mean" else kl.sum(1)
    loss = kl.mean()
    return loss, {"kl": loss.detach()}


def _check_transitions(**tensors):
    """Per-transition tensors must all have the same shape (N,)."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1 or len(next(iter(shapes.values()))) != 1:
        raise ValueError(f"{', '.join(shapes)} must all have shape (N,), one value per transition; got "
                         f"{', '.join(f'{name} {shape}' for name, shape in shapes.items())}")
