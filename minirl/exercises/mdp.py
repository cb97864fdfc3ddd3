"""Checkers for notebook 02 (denoising as a multi-step MDP).

- `check_gaussian_log_prob(fn)`: fn(x, mean, sigma, reduce) -> log N(x; mean, sigma^2 I) per sample (B,),
  averaged ("mean") or summed ("sum") over dimensions, against `minirl.mdp.gaussian_log_prob`.
- `check_ddim_sigmas(fn)`: fn(scheduler, eta) -> sigma_t of every step of a DDIMScheduler's schedule (T,)
  (DDIM Eq. 16), against `minirl.mdp.step_sigmas` on five schedules, one of which catches the classic bug of
  taking `alphas_cumprod[0]` for the alpha-bar after the last step instead of `final_alpha_cumprod`.
"""

import torch

from minirl.exercises import check
from minirl.mdp import gaussian_log_prob, step_sigmas
from minirl.sd import sd_scheduler
from minirl.tinyworld.diffusion import ddim_scheduler


def _log_prob_cases():
    g = torch.Generator().manual_seed(0)
    cases = []
    for shape, sigma, reduce in (((2, 3, 16, 16), [0.83, 0.15], "mean"), ((2, 3, 16, 16), [0.83, 0.15], "sum"),
                                 ((3, 4, 8, 8), [1.0, 0.02, 0.3], "mean"), ((1, 4, 8, 8), [0.005], "sum")):
        mean = torch.randn(shape, generator=g)
        sigma = torch.tensor(sigma)
        x = mean + sigma.view(-1, 1, 1, 1) * torch.randn(shape, generator=g)  # a sample of the Gaussian
        cases.append((x, mean, sigma, reduce))
    x, mean, sigma, _ = cases[0]
    cases.append((x + 0.3, mean, sigma, "mean"))  # far from the mean: the quadratic term dominates
    return cases


LOG_PROB_CASES = ("a sample of the Gaussian, mean over dimensions", "the same, sum over dimensions",
                  "another shape and three sigmas down to 0.02, mean", "sigma 0.005, sum",
                  "x far from the mean: the quadratic term dominates")


def check_gaussian_log_prob(student_fn):
    """student_fn(x (B, C, H, W), mean (B, C, H, W), sigma (B,), reduce "mean" | "sum") -> (B,)."""
    return check("gaussian_log_prob", student_fn, gaussian_log_prob, _log_prob_cases(), atol=1e-4, rtol=1e-5,
                 descriptions=LOG_PROB_CASES)


def _schedulers():
    """(scheduler, eta) of each case of SCHEDULER_CASES."""
    tiny = ddim_scheduler()
    sd, sd_half = sd_scheduler(), sd_scheduler()
    ends_at_zero = sd_scheduler(set_alpha_to_one=True, steps_offset=0)
    to_one = sd_scheduler(set_alpha_to_one=True, steps_offset=1)  # last t = 1: alpha_bar after it is 1, not a[0]
    for scheduler, steps in ((tiny, 10), (sd, 20), (sd_half, 50), (ends_at_zero, 10), (to_one, 10)):
        scheduler.set_timesteps(steps)
    return [(tiny, 1.0), (sd, 1.0), (sd_half, 0.5), (ends_at_zero, 1.0), (to_one, 1.0)]


SCHEDULER_CASES = ("the tiny world's schedule, eta 1", "Stable Diffusion's schedule, 20 steps, eta 1",
                   "Stable Diffusion's schedule, 50 steps, eta 0.5",
                   "last step lands on t = 0 with set_alpha_to_one=True: sigma_t = 0 there",
                   "last step with set_alpha_to_one=True, steps_offset=1: the alpha-bar after it is "
                   "final_alpha_cumprod = 1, not alphas_cumprod[0]")


def check_ddim_sigmas(student_fn):
    """student_fn(scheduler (a DDIMScheduler after set_timesteps), eta) -> sigma_t of each step (T,)."""
    return check("ddim_sigmas", student_fn, step_sigmas, _schedulers(), atol=1e-6, rtol=1e-4,
                 descriptions=SCHEDULER_CASES)
