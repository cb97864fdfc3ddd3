"""Reference tests for the stochastic steps: diffusers gives the next sample, an independent Gaussian
log-density (torch.distributions) gives the log-probability."""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from torch.distributions import Normal

from minirl.mdp import (ddim_step_with_logprob, ddpm_step_with_logprob, step_sigmas, step_with_logprob)
from minirl.sd import SD_BETAS, sd_scheduler


def ddim(steps=20, **kw):
    s = sd_scheduler(**kw)
    s.set_timesteps(steps)
    return s


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_ddim_step_matches_diffusers_and_gaussian_density(prediction_type, eta):
    scheduler = ddim(prediction_type=prediction_type)
    g = torch.Generator().manual_seed(0)
    x_t, eps = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    for t in scheduler.timesteps[[0, 7, -1]].tolist():
        prev, log_prob = ddim_step_with_logprob(scheduler, eps, t, x_t, eta=eta,
                                                generator=torch.Generator().manual_seed(1))
        z = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
        ref = scheduler.step(eps, t, x_t, eta=eta, variance_noise=z).prev_sample
        torch.testing.assert_close(prev, ref, rtol=0, atol=1e-6)
        # independent density: mean = diffusers' step without noise, sigma from DDIM Eq. 16 by hand
        mean = scheduler.step(eps, t, x_t, eta=eta, variance_noise=torch.zeros_like(z)).prev_sample
        a_t = scheduler.alphas_cumprod[t]
        prev_t = t - 1000 // 20
        a_prev = scheduler.alphas_cumprod[prev_t] if prev_t >= 0 else scheduler.alphas_cumprod[0]
        sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
        dens = Normal(mean.double(), sigma.double()).log_prob(prev.double()).flatten(1)
        torch.testing.assert_close(log_prob.double(), dens.mean(1), rtol=1e-5, atol=1e-5)
        _, log_prob_sum = ddim_step_with_logprob(scheduler, eps, t, x_t, eta=eta, prev_sample=prev, reduce="sum")
        torch.testing.assert_close(log_prob_sum.double(), dens.sum(1), rtol=1e-5, atol=1e-3)


def test_given_prev_sample_gives_same_log_prob_and_mixed_timesteps():
    scheduler = ddim()
    x_t, eps = torch.randn(4, 4, 8, 8), torch.randn(4, 4, 8, 8)
    t = scheduler.timesteps[[0, 5, 10, 18]]
    prev, log_prob = ddim_step_with_logprob(scheduler, eps, t, x_t)
    again, log_prob2 = ddim_step_with_logprob(scheduler, eps, t, x_t, prev_sample=prev)
    assert torch.equal(again, prev)
    torch.testing.assert_close(log_prob2, log_prob)
    for i in range(4):  # each row equals the scalar-timestep step
        _, lp = ddim_step_with_logprob(scheduler, eps[i:i + 1], int(t[i]), x_t[i:i + 1], prev_sample=prev[i:i + 1])
        torch.testing.assert_close(lp, log_prob[i:i + 1])


def test_low_precision_model_output_computed_in_fp32():
    scheduler = ddim()
    x_t, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    prev, lp32 = ddim_step_with_logprob(scheduler, eps, 501, x_t)
    prev16, lp16 = ddim_step_with_logprob(scheduler, eps.bfloat16(), 501, x_t.bfloat16(), prev_sample=prev)
    assert lp16.dtype == torch.float32 and prev16.dtype == torch.bfloat16
    torch.testing.assert_close(lp16, lp32, atol=0.05, rtol=0)


def test_ddpm_step_matches_diffusers():
    scheduler = DDPMScheduler(**SD_BETAS, clip_sample=False)
    scheduler.set_timesteps(20)
    x_t, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    for t in scheduler.timesteps[[0, 10, -2]].tolist():
        prev, log_prob = ddpm_step_with_logprob(scheduler, eps, t, x_t, generator=torch.Generator().manual_seed(3))
        ref = scheduler.step(eps, t, x_t, generator=torch.Generator().manual_seed(3)).prev_sample
        torch.testing.assert_close(prev, ref, rtol=0, atol=1e-6)
        sigma = scheduler._get_variance(t) ** 0.5
        mean = ref - sigma * torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
        dens = Normal(mean.double(), sigma.double()).log_prob(prev.double()).flatten(1).mean(1)
        torch.testing.assert_close(log_prob.double(), dens, rtol=1e-5, atol=1e-5)
    # the step to t = 0 is deterministic in diffusers: sampling works, a density is refused
    t0 = int(scheduler.timesteps[-1])
    prev, log_prob = ddpm_step_with_logprob(scheduler, eps, t0, x_t)
    torch.testing.assert_close(prev, scheduler.step(eps, t0, x_t).prev_sample)
    assert torch.equal(log_prob, torch.zeros(2))
    with pytest.raises(ValueError, match="sigma_t = 0"):
        ddpm_step_with_logprob(scheduler, eps, t0, x_t, prev_sample=prev)


def test_sigma_zero_at_steps_offset_0_is_named_not_nan():
    scheduler = ddim(steps_offset=0)
    sigmas = step_sigmas(scheduler)
    assert sigmas[-1] == 0 and (sigmas[:-1] > 0).all()
    x_t, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    prev, log_prob = ddim_step_with_logprob(scheduler, eps, 0, x_t)
    assert torch.isfinite(prev).all() and torch.isfinite(log_prob).all()
    with pytest.raises(ValueError, match=r"timestep\(s\) \[0, 0\] where sigma_t = 0"):
        ddim_step_with_logprob(scheduler, eps, 0, x_t, prev_sample=prev)


def test_sigma_schedule_of_stable_diffusion_config():
    """The numbers in the docs: the last two of 20 scaled-linear steps have tiny sigma."""
    sigmas = step_sigmas(ddim())
    torch.testing.assert_close(sigmas[-3:], torch.tensor([0.167, 0.041, 0.021]), atol=1e-3, rtol=0)
    cos = step_sigmas(ddim(beta_schedule="squaredcos_cap_v2"))
    torch.testing.assert_close(cos[-3:], torch.tensor([0.078, 0.009, 0.005]), atol=1e-3, rtol=0)


@pytest.mark.parametrize("bad, match", [
    (dict(eta=0.0), "eta must be > 0"),
    (dict(eta=-1.0), "eta must be > 0"),
    (dict(reduce="max"), "reduce must be 'mean' or 'sum'"),
    (dict(timestep=torch.tensor([1, 2, 3])), r"shape \(2,\)"),
])
def test_bad_input_is_named(bad, match):
    scheduler = ddim()
    kw = dict(timestep=501, eta=1.0)
    kw.update(bad)
    with pytest.raises(ValueError, match=match):
        ddim_step_with_logprob(scheduler, torch.randn(2, 4, 8, 8), kw.pop("timestep"), torch.randn(2, 4, 8, 8), **kw)


def test_unsupported_and_unready_schedulers():
    from diffusers import PNDMScheduler
    x = torch.randn(1, 4, 8, 8)
    with pytest.raises(TypeError, match="PNDMScheduler is not supported"):
        step_with_logprob(PNDMScheduler(), x, 1, x)
    with pytest.raises(ValueError, match="set_timesteps"):
        ddim_step_with_logprob(DDIMScheduler(), x, 1, x)
