"""Notebook 02's coding exercises, answered (for teachers): a step's Gaussian log-probability and the DDIM
step's standard deviation sigma_t(eta) (DDIM Eq. 16)."""

import math

import torch


def gaussian_log_prob(x, mean, sigma, reduce="mean"):
    """x, mean (B, C, H, W); sigma (B,) one std per sample; reduce "mean" or "sum" over C*H*W -> (B,)."""
    sigma = sigma.view(-1, *[1] * (x.ndim - 1))                                     # (B, 1, 1, 1)
    log_p = -((x - mean) ** 2) / (2 * sigma**2) - torch.log(sigma) - 0.5 * math.log(2 * math.pi)
    log_p = log_p.flatten(1)                                                        # (B, D)
    return log_p.mean(1) if reduce == "mean" else log_p.sum(1)


def ddim_sigmas(scheduler, eta):
    """sigma_t of each step of scheduler.timesteps, (T,)."""
    alpha_bar = scheduler.alphas_cumprod
    t = scheduler.timesteps
    t_prev = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    final = torch.as_tensor(scheduler.final_alpha_cumprod)  # the alpha-bar after the last step, not alpha_bar[0]
    alpha_bar_t = alpha_bar[t]
    alpha_bar_prev = torch.where(t_prev >= 0, alpha_bar[t_prev.clamp(min=0)], final)
    return eta * ((1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev)).sqrt()
