"""The RL losses, as pure functions that read like the paper's equations. Each returns (loss, info).

Notation: log_prob = log p_theta(x_{t-1} | x_t, c) under the current weights, old_log_prob the same at
sampling time (theta_old), advantages A (paper Eq. 10). All per-transition tensors have shape (N,).
Losses are minimised, so they are the negated objectives J.
References: REINFORCE (Williams 1992; DDPO Eq. 6 / paper Eq. 6), PPO (Schulman et al. 2017; paper Eq. 7),
L_pre (paper Eq. 9), KL to the reference model (DPOK, Fan et al. 2023).
"""

import torch


def reinforce_loss(log_prob, advantages):
    """-E[A * log p_theta]: its gradient is the likelihood-ratio (score-function) estimator
    -E[A * grad log p_theta] -- autograd differentiates log_prob, so "grad log p" is never written out."""
    loss = -(advantages * log_prob).mean()
    return loss, {"loss": loss.detach()}


def ppo_loss(log_prob, old_log_prob, advantages, clip_range):
    """PPO's clipped surrogate with importance ratio w = p_theta / p_theta_old (paper Eq. 7):
    J = E[min(w A, clip(w, 1 - eps, 1 + eps) A)]. Returns (-J, info with approx_kl, clipfrac, ratio)."""
    if not clip_range > 0:
        raise ValueError(f"clip_range must be > 0; got {clip_range}")
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
    """L_pre (paper Eq. 9): the ordinary diffusion loss ||eps - eps_theta(x_t, t, c)||^2 on pretraining data."""
    loss = torch.nn.functional.mse_loss(model_pred.float(), target.float())
    return loss, {"pretrain_loss": loss.detach()}


def kl_to_reference(mean, ref_mean, sigma, reduce="mean"):
    """KL(p_theta || p_ref) of one step: both Gaussians share sigma_t, so it is ||mu - mu_ref||^2 / (2 sigma_t^2),
    averaged or summed over dimensions like the log-probability. mean, ref_mean (N, ...), sigma (N,)."""
    sigma = sigma.reshape(-1, *([1] * (mean.ndim - 1)))
    kl = ((mean.float() - ref_mean.float()) ** 2 / (2 * sigma.float() ** 2)).flatten(1)
    kl = kl.mean(1) if reduce == "mean" else kl.sum(1)
    loss = kl.mean()
    return loss, {"kl": loss.detach()}
