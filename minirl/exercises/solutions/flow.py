"""Notebook 10's coding exercises, answered (for teachers): the mean of a step of Flow-GRPO's SDE, and the std
of every step of a flow schedule. Written from the equations (notebook 10, section 3), not from minirl.mdp."""

import torch


def _s(sigma, second_sigma, noise_level):
    """The SDE's diffusion coefficient s = a sqrt(sigma / (1 - sigma)); at sigma = 1, 1 - second_sigma below."""
    denominator = 1 - (second_sigma if sigma == 1 else sigma)
    return noise_level * (sigma / denominator) ** 0.5


def flow_sde_mean(x, v, sigma, sigma_next, noise_level):
    """x, v (B, C, H, W); floats sigma > sigma_next, noise_level -> mu (B, C, H, W)."""
    dt = sigma_next - sigma                                                  # < 0: sampling lowers sigma
    s = _s(sigma, sigma_next, noise_level)
    return x + (v + s**2 / (2 * sigma) * (x + (1 - sigma) * v)) * dt


def flow_step_stds(scheduler, noise_level):
    """The std s sqrt(-dt) of each step of scheduler.timesteps, (T,)."""
    sigmas = scheduler.sigmas.double().tolist()                              # (T + 1,), ending with 0
    stds = [_s(sigma, sigmas[1], noise_level) * (sigma - sigma_next) ** 0.5
            for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:])]
    return torch.tensor(stds, dtype=torch.float32)
