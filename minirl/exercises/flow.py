"""Checkers for notebook 10 (from DDPO to Flow-GRPO).

- `check_flow_sde_mean(fn)`: fn(x, v, sigma, sigma_next, noise_level) -> the mean of one step of Flow-GRPO's SDE
  from sigma to sigma_next, mu = x + [v + s^2 / (2 sigma) (x + (1 - sigma) v)] (sigma_next - sigma) with
  s = noise_level sqrt(sigma / (1 - sigma)) (1 - sigma_next in the denominator at sigma = 1), against
  `minirl.mdp.flow_mean_and_sigma` on a two-step schedule [sigma, sigma_next].
- `check_flow_step_stds(fn)`: fn(scheduler, noise_level) -> the std s sqrt(-dt) of every step of a
  FlowMatchEulerDiscreteScheduler's schedule (T,), against `minirl.mdp.step_sigmas` on five schedules, one of
  which does not start at sigma = 1 (no special case there).
"""

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from minirl.exercises import check
from minirl.mdp import flow_mean_and_sigma, step_sigmas
from minirl.tinyworld.diffusion import flow_scheduler


def reference_sde_mean(x, v, sigma, sigma_next, noise_level):
    """minirl's mean of the step from sigma to sigma_next: flow_mean_and_sigma on the schedule [sigma, sigma_next]
    (whose second sigma is sigma_next, so the step at sigma = 1 uses 1 - sigma_next)."""
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0)
    scheduler.set_timesteps(sigmas=[sigma, sigma_next])
    return flow_mean_and_sigma(scheduler, v, scheduler.timesteps[0], x, noise_level)[0]


SDE_MEAN_STEPS = [  # (sigma, sigma_next, noise_level, what the case tests)
    (0.667, 0.556, 0.7, "a middle step of the tiny world's schedule, noise level 0.7"),
    (1.0, 0.889, 0.7, "the first step, at sigma = 1: s uses 1 - sigma_next in its denominator"),
    (0.3, 0.2, 1.0, "a low-noise step, noise level 1.0"),
    (0.9, 0.6, 0.3, "a long step (dt = -0.3), noise level 0.3"),
    (0.112, 0.001, 0.7, "the step before the last, to sigma = 0.001"),
]


def _sde_mean_cases():
    g = torch.Generator().manual_seed(0)
    cases = []
    for sigma, sigma_next, a, _ in SDE_MEAN_STEPS:
        x0, noise = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
        x = (1 - sigma) * x0 + sigma * noise                              # a state at flow time sigma
        v = noise - x0 + 0.3 * torch.randn(2, 3, 8, 8, generator=g)       # a velocity with a model's error
        cases.append((x, v, sigma, sigma_next, a))
    return cases


def check_flow_sde_mean(student_fn):
    """student_fn(x (B, C, H, W), v (B, C, H, W), sigma, sigma_next, noise_level) -> mu (B, C, H, W)."""
    return check("flow_sde_mean", student_fn, reference_sde_mean, _sde_mean_cases(), atol=1e-5, rtol=1e-4,
                 descriptions=[d for *_, d in SDE_MEAN_STEPS])


def _schedules():
    """(scheduler, noise_level) of each case of SCHEDULE_CASES."""
    tiny, tiny_1 = flow_scheduler(), flow_scheduler()
    sd3, sd3_40 = FlowMatchEulerDiscreteScheduler(shift=3.0), FlowMatchEulerDiscreteScheduler(shift=3.0)
    late = FlowMatchEulerDiscreteScheduler(shift=1.0)
    for scheduler, steps in ((tiny, 10), (tiny_1, 10), (sd3, 10), (sd3_40, 40)):
        scheduler.set_timesteps(steps)
    late.set_timesteps(sigmas=[0.8, 0.6, 0.4, 0.2])
    return [(tiny, 0.7), (tiny_1, 1.0), (sd3, 0.7), (sd3_40, 0.3), (late, 0.7)]


SCHEDULE_CASES = ("the tiny flow world's 10 steps (shift 1), noise level 0.7", "the same, noise level 1.0",
                  "SD3's 10 steps (shift 3), noise level 0.7", "SD3's 40 steps, noise level 0.3",
                  "a schedule starting at sigma = 0.8 (no step at sigma = 1), noise level 0.7")


def check_flow_step_stds(student_fn):
    """student_fn(scheduler (a FlowMatchEulerDiscreteScheduler after set_timesteps), noise_level) -> (T,)."""
    return check("flow_step_stds", student_fn, lambda scheduler, a: step_sigmas(scheduler, noise_level=a),
                 _schedules(), atol=1e-6, rtol=1e-4, descriptions=SCHEDULE_CASES)
