"""Reference tests for the stochastic steps: diffusers gives the next sample, an independent Gaussian
log-density (torch.distributions) gives the log-probability."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from torch.distributions import Normal

from minirl.mdp import (ddim_step_with_logprob, ddpm_step_with_logprob, gaussian_log_prob, step_sigmas,
                        step_with_logprob)
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
    """bf16 inputs are only rounded: the density equals fp64's on the rounded inputs (bf16 arithmetic: ~1e-3 off)."""
    scheduler = ddim()
    x_t, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = int(scheduler.timesteps[9])
    prev, _ = ddim_step_with_logprob(scheduler, eps, t, x_t)
    prev16, lp16 = ddim_step_with_logprob(scheduler, eps.bfloat16(), t, x_t.bfloat16(), prev_sample=prev)
    assert lp16.dtype == torch.float32 and prev16.dtype == torch.bfloat16
    x_t16, eps16 = x_t.bfloat16().double(), eps.bfloat16().double()  # the rounded inputs, then float64
    a_t, a_prev = scheduler.alphas_cumprod.double()[[t, t - 50]]
    sigma = ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
    x0_hat = (x_t16 - (1 - a_t).sqrt() * eps16) / a_t.sqrt()
    mean = a_prev.sqrt() * x0_hat + (1 - a_prev - sigma**2).sqrt() * eps16
    dens = Normal(mean, sigma).log_prob(prev.double()).flatten(1).mean(1)
    torch.testing.assert_close(lp16.double(), dens, rtol=0, atol=1e-5)


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("steps_offset", [0, 1])
def test_ddpm_step_matches_diffusers(steps_offset, variance_type):
    """Every step of 20 against DDPMScheduler.step with the same noise. The last one is deterministic: with
    steps_offset=0 from t = 0 (diffusers adds no noise), with steps_offset=1 and fixed_small from t = 1 to x_0
    (variance 0, which diffusers clamps to 1e-20: sigma_t = 1e-10); sampled like diffusers, with no density."""
    scheduler = DDPMScheduler(**SD_BETAS, clip_sample=False, steps_offset=steps_offset, variance_type=variance_type)
    scheduler.set_timesteps(20)
    g = torch.Generator().manual_seed(0)
    x_t, eps = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    sigmas = step_sigmas(scheduler)
    for k, t in enumerate(scheduler.timesteps.tolist()):
        prev, log_prob = ddpm_step_with_logprob(scheduler, eps, t, x_t, generator=torch.Generator().manual_seed(3))
        ref = scheduler.step(eps, t, x_t, generator=torch.Generator().manual_seed(3)).prev_sample
        torch.testing.assert_close(prev, ref, rtol=0, atol=1e-6)
        sigma = scheduler._get_variance(t).double() ** 0.5 if t > 0 else torch.zeros((), dtype=torch.float64)
        if sigma < 1e-3:  # diffusers' 1e-10 (clamped variance 0) or no noise at t = 0
            assert sigmas[k] == 0 and torch.equal(log_prob, torch.zeros(2))
            with pytest.raises(ValueError, match=rf"timestep\(s\) \[{t}, {t}\] where sigma_t = 0"):
                ddpm_step_with_logprob(scheduler, eps, t, x_t, prev_sample=prev)
            continue
        assert sigmas[k].item() == pytest.approx(sigma.item(), rel=1e-5)
        mean = ref.double() - sigma * torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3)).double()
        dens = Normal(mean, sigma).log_prob(prev.double()).flatten(1)
        torch.testing.assert_close(log_prob.double(), dens.mean(1), rtol=0, atol=1e-5)
        _, log_prob_sum = ddpm_step_with_logprob(scheduler, eps, t, x_t, prev_sample=prev, reduce="sum")
        torch.testing.assert_close(log_prob_sum.double(), dens.sum(1), rtol=0, atol=1e-3)
    deterministic = int((sigmas == 0).sum())
    assert deterministic == (1 if variance_type == "fixed_small" or steps_offset == 0 else 0)


def test_ddpm_last_step_with_steps_offset_1_is_never_trainable():
    """Stable Diffusion's DDPM config: sigma_t of the last step, from t = 1, is 0, so DiffusionPolicy's
    trainable_steps, (sigmas >= min_sigma) & (sigmas > 0), leave it out even with min_sigma = 0."""
    scheduler = DDPMScheduler(**SD_BETAS, steps_offset=1)
    scheduler.set_timesteps(20)
    sigmas = step_sigmas(scheduler)
    trainable = torch.nonzero((sigmas >= 0) & (sigmas > 0)).flatten()
    assert trainable.tolist() == list(range(19))
    assert sigmas[-1] == 0 and sigmas[:-1].min() > 0.04


def test_timesteps_outside_the_training_range_are_named():
    scheduler = DDPMScheduler(**SD_BETAS, steps_offset=1)
    scheduler.set_timesteps(1000)  # leading spacing + offset 1: the first timestep is 1000
    with pytest.raises(ValueError, match=r"timesteps must be in \[0, 1000\).*got \[1000\].*at most 999"):
        step_sigmas(scheduler)


def test_sigma_zero_at_steps_offset_0_is_named_not_nan():
    scheduler = ddim(steps_offset=0)
    sigmas = step_sigmas(scheduler)
    assert sigmas[-1] == 0 and (sigmas[:-1] > 0).all()
    x_t, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    prev, log_prob = ddim_step_with_logprob(scheduler, eps, 0, x_t)
    assert torch.isfinite(prev).all() and torch.isfinite(log_prob).all()
    with pytest.raises(ValueError, match=r"timestep\(s\) \[0, 0\] where sigma_t = 0"):
        ddim_step_with_logprob(scheduler, eps, 0, x_t, prev_sample=prev)


def ddim_sigmas_by_hand(alpha_bar, steps):
    """DDIM Eq. 16 at eta 1 for "leading" timesteps with steps_offset=1 and set_alpha_to_one=False, float64."""
    t = np.arange(0, 1000, 1000 // steps)[::-1] + 1
    prev_t = t - 1000 // steps
    a_t, a_prev = alpha_bar[t], np.where(prev_t >= 0, alpha_bar[np.maximum(prev_t, 0)], alpha_bar[0])
    return torch.from_numpy(np.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)))


def test_sigma_schedule_of_stable_diffusion_config():
    """The numbers in the docs: the last two of 20 scaled-linear steps have tiny sigma; against the betas by hand."""
    scaled_linear = np.cumprod(1 - np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2)
    f = np.cos((np.arange(1001) / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # squaredcos_cap_v2 (iDDPM Eq. 17)
    cosine = np.cumprod(1 - np.minimum(1 - f[1:] / f[:-1], 0.999))
    for overrides, alpha_bar, last in (({}, scaled_linear, [0.167, 0.041, 0.021]),
                                       ({"beta_schedule": "squaredcos_cap_v2"}, cosine, [0.078, 0.009, 0.005])):
        sigmas = step_sigmas(ddim(**overrides)).double()
        torch.testing.assert_close(sigmas, ddim_sigmas_by_hand(alpha_bar, 20), rtol=1e-4, atol=0)
        torch.testing.assert_close(sigmas[-3:], torch.tensor(last, dtype=torch.float64), atol=1e-3, rtol=0)


@pytest.mark.parametrize("bad, match", [
    (dict(eta=0.0), r"eta must be > 0 and <= 1 .*got eta=0.0"),
    (dict(eta=-1.0), r"eta must be > 0 and <= 1 .*got eta=-1.0"),
    (dict(eta=1.5), r"eta must be > 0 and <= 1 .*above 1 the mean can be NaN.*got eta=1.5"),
    (dict(eta=float("nan")), r"eta must be > 0 and <= 1 .*got eta=nan"),
    (dict(eta=float("inf")), r"eta must be > 0 and <= 1 .*got eta=inf"),
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


def test_gaussian_log_prob_against_torch_distributions():
    x, mean = torch.randn(3, 2, 5, dtype=torch.float64), torch.randn(3, 2, 5, dtype=torch.float64)
    sigma = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    dens = Normal(mean, sigma[:, None, None]).log_prob(x).flatten(1)
    torch.testing.assert_close(gaussian_log_prob(x, mean, sigma), dens.mean(1), rtol=1e-6, atol=0)
    torch.testing.assert_close(gaussian_log_prob(x, mean, sigma, "sum"), dens.sum(1), rtol=1e-6, atol=0)
    # one sigma for all, a mean that broadcasts (as notebook 04 uses it)
    torch.testing.assert_close(gaussian_log_prob(x, torch.tensor(0.0), torch.tensor(2.0)),
                               Normal(0.0, 2.0).log_prob(x).flatten(1).mean(1), rtol=1e-6, atol=0)


@pytest.mark.parametrize("x_shape, mean_shape, sigma, match", [
    ((4,), (4,), 1.0, r"x must have shape \(B, ...\) and mean broadcast to it; got x \(4,\)"),
    ((2, 3), (2, 1, 3), 1.0, r"got x \(2, 3\), mean \(2, 1, 3\)"),
    ((2, 3), (3, 3), 1.0, r"got x \(2, 3\), mean \(3, 3\)"),
    ((2, 3), (2, 3), torch.ones(2, 3), r"sigma must be a scalar or of shape \(2,\).*got shape \(2, 3\)"),
    ((2, 3), (2, 3), torch.ones(3), r"sigma must be a scalar or of shape \(2,\).*got shape \(3,\)"),
    ((2, 3), (2, 3), torch.tensor([1.0, 0.0]), r"sigma must be > 0 .*got \[0.0\]"),
    ((2, 3), (2, 3), torch.tensor(float("nan")), r"sigma must be > 0 .*got nan"),
])
def test_gaussian_log_prob_bad_shapes_and_sigma(x_shape, mean_shape, sigma, match):
    with pytest.raises(ValueError, match=match):
        gaussian_log_prob(torch.zeros(x_shape), torch.zeros(mean_shape), sigma)
