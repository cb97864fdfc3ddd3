"""The denoising chain as a Markov decision process (DDPO, Black et al. 2023, Eqs. 2-5), for diffusion (DDIM,
DDPM) and flow-matching (Flow-GRPO, Liu et al. 2025) samplers.

state s_t = (c, t, x_t), action a_t = x_{t-1}, policy pi(a_t | s_t) = p_theta(x_{t-1} | x_t, c).
A stochastic sampler step is a Gaussian, x_{t-1} ~ N(mu_theta(x_t, t, c), sigma_t^2 I), so each action has a
log-probability; this module computes both the step and its log-probability, in fp32 whatever the model
dtype. Follows diffusers' DDIMScheduler.step / DDPMScheduler.step (same next sample for the same noise) and
ddpo-pytorch's `ddim_step_with_logprob`; unlike it, timesteps may differ across the batch and the reduction
of the log-density over pixels is explicit.

Why eta in (0, 1]: DDIM with eta = 0 is deterministic (sigma_t = 0), and a deterministic step has no density;
eta = 1 is DDPM's variance, and above 1 the variance can exceed 1 - alpha_bar_{t-1} (a NaN mean).
Why SIGMA_MIN: a step whose sigma_t is below it counts as deterministic (sigma_t = 0), whatever the config.
The data are at unit scale (x_T ~ N(0, I)), where fp32 resolves about 1.2e-7: below 100 times that, the
rounding of a stored x_{t-1} is over 1% of sigma_t, so the noise it carries is no longer a sample of the
Gaussian. DDPM's last step with steps_offset=1 (from t = 1 to x_0: variance 0, which diffusers clamps to
1e-20, sigma_t = 1e-10) is such a step: its log-density would be about +22 per dimension.
Why `reduce="mean"` by default: DDPO averages the log-density over the C*H*W dimensions, so a PPO clip range
of 1e-4 means "1e-4 per dimension on average"; with the true sum it would have to be thousands of times
wider.

Flow matching (SD3: FlowMatchEulerDiscreteScheduler) samples an ODE, dx = v dt, which has no log-probability.
Flow-GRPO's SDE has the same marginals and a Gaussian step (flow_mean_and_sigma); exploration noise
`noise_level` plays eta's role. The scheduler's type picks the step (step_with_logprob, mean_and_sigma).
"""

import math

import torch
from diffusers import DDIMScheduler, DDPMScheduler, FlowMatchEulerDiscreteScheduler
from diffusers.utils.torch_utils import randn_tensor

SUPPORTED = (DDIMScheduler, DDPMScheduler, FlowMatchEulerDiscreteScheduler)
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")  # what a UNet may predict (predict_x0_eps)
SIGMA_MIN = 100 * torch.finfo(torch.float32).eps  # 1.2e-5: a smaller sigma_t is a deterministic step


def gaussian_log_prob(x, mean, sigma, reduce="mean"):
    """log N(x; mean, sigma^2 I) per batch element, averaged ("mean") or summed ("sum") over dims.

    x (B, ...), mean broadcastable to x's shape, sigma > 0 a scalar or (B,). Returns (B,)."""
    if reduce not in ("mean", "sum"):
        raise ValueError(f"reduce must be 'mean' or 'sum'; got {reduce!r}")
    sigma = torch.as_tensor(sigma)
    broadcasts = mean.ndim <= x.ndim and all(m in (1, d) for m, d in zip(mean.shape[::-1], x.shape[::-1]))
    if x.ndim < 2 or not broadcasts:
        raise ValueError(f"x must have shape (B, ...) and mean broadcast to it; got x {tuple(x.shape)}, "
                         f"mean {tuple(mean.shape)}")
    if sigma.shape not in ((), (len(x),)):
        raise ValueError(f"sigma must be a scalar or of shape ({len(x)},), one per batch element; got shape "
                         f"{tuple(sigma.shape)}")
    if not bool((sigma > 0).all()):
        raise ValueError(f"sigma must be > 0 (a step with sigma_t = 0 has no density); got "
                         f"{sigma[~(sigma > 0)].tolist() if sigma.ndim else sigma.item()}")
    sigma = _per_sample(sigma, x)                                       # (B, 1, 1, 1)
    log_p = -((x - mean) ** 2) / (2 * sigma**2) - torch.log(sigma) - 0.5 * math.log(2 * math.pi)
    log_p = log_p.flatten(1)                                            # (B, D)
    return log_p.mean(1) if reduce == "mean" else log_p.sum(1)          # (B,)


def ddim_step_with_logprob(scheduler, model_output, timestep, sample, *, eta=1.0, prev_sample=None,
                           generator=None, reduce="mean"):
    """One stochastic DDIM step x_t -> x_{t-1} (DDIM paper Eqs. 12, 16) and log p(x_{t-1} | x_t, c).

    timestep: an int or a (B,) tensor. If prev_sample is None, x_{t-1} is sampled (with `generator`, one
    generator or a list of B); otherwise its log-probability under the current model_output is returned.
    Returns (prev_sample (B, C, H, W) in sample's dtype, log_prob (B,) fp32).
    """
    mean, sigma = ddim_mean_and_sigma(scheduler, model_output, timestep, sample, eta)
    return _gaussian_step(mean, sigma, sample, prev_sample, generator, reduce, timestep)


def ddpm_step_with_logprob(scheduler, model_output, timestep, sample, *, prev_sample=None, generator=None,
                           reduce="mean"):
    """One DDPM ancestral step (DDPM paper Eqs. 6-7) and its log-probability; see ddim_step_with_logprob."""
    mean, sigma = ddpm_mean_and_sigma(scheduler, model_output, timestep, sample)
    return _gaussian_step(mean, sigma, sample, prev_sample, generator, reduce, timestep)


def flow_sde_step_with_logprob(scheduler, model_output, timestep, sample, *, noise_level=0.7, prev_sample=None,
                               generator=None, reduce="mean"):
    """One step of Flow-GRPO's SDE from sigma to the next sigma of the schedule, and log p(x_next | x, c).

    scheduler: a FlowMatchEulerDiscreteScheduler after set_timesteps; model_output: the velocity v (B, C, H, W);
    timestep: a value of scheduler.timesteps (int, float or a (B,) tensor). The step is flow_mean_and_sigma's
    Gaussian; otherwise as ddim_step_with_logprob.
    """
    mean, std = flow_mean_and_sigma(scheduler, model_output, timestep, sample, noise_level)
    return _gaussian_step(mean, std, sample, prev_sample, generator, reduce, timestep)


def step_with_logprob(scheduler, model_output, timestep, sample, *, eta=1.0, noise_level=0.7, **kwargs):
    """Dispatch by scheduler type: DDIM (eta), DDPM (always eta = 1) or flow matching's SDE (noise_level)."""
    if isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
        return flow_sde_step_with_logprob(scheduler, model_output, timestep, sample, noise_level=noise_level,
                                          **kwargs)
    if isinstance(scheduler, DDIMScheduler):
        return ddim_step_with_logprob(scheduler, model_output, timestep, sample, eta=eta, **kwargs)
    if isinstance(scheduler, DDPMScheduler):
        return ddpm_step_with_logprob(scheduler, model_output, timestep, sample, **kwargs)
    raise _unsupported(scheduler)


def ddim_mean_and_sigma(scheduler, model_output, timestep, sample, eta=1.0):
    """The Gaussian of a DDIM step: mu_theta(x_t) (B, C, H, W) fp32 and sigma_t (B,) fp32."""
    _check_type(scheduler, DDIMScheduler, "ddim_step_with_logprob")
    _check_ready(scheduler)
    if not (math.isfinite(eta) and 0 < eta <= 1):
        raise ValueError(f"eta must be > 0 and <= 1 for a stochastic DDIM step with a log-probability (0 is "
                         f"deterministic, 1 is DDPM's variance and DDPO's setting, above 1 the mean can be NaN); "
                         f"got eta={eta}")
    t = _batch_timesteps(timestep, sample, scheduler)                   # (B,)
    prev_t = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    alphas_cumprod = scheduler.alphas_cumprod.to(sample.device, torch.float32)
    alpha_bar_t = alphas_cumprod[t]
    alpha_bar_prev = torch.where(prev_t >= 0, alphas_cumprod[prev_t.clamp(min=0)],
                                 torch.as_tensor(scheduler.final_alpha_cumprod, dtype=torch.float32))
    x0_hat, eps_hat = predict_x0_eps(scheduler, model_output, sample, alpha_bar_t)
    variance = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev)
    sigma_t = _floor(eta * variance.sqrt())                             # (B,)
    a_prev, s = _per_sample(alpha_bar_prev, sample), _per_sample(sigma_t, sample)
    mean = a_prev.sqrt() * x0_hat + (1 - a_prev - s**2).sqrt() * eps_hat
    return mean, sigma_t


def ddpm_mean_and_sigma(scheduler, model_output, timestep, sample):
    """The Gaussian of a DDPM ancestral step ("fixed_small" variance, the posterior q(x_{t-1}|x_t, x0))."""
    _check_type(scheduler, DDPMScheduler, "ddpm_step_with_logprob")
    _check_ready(scheduler)
    if scheduler.config.variance_type not in ("fixed_small", "fixed_small_log", "fixed_large"):
        raise ValueError(f"DDPMScheduler variance_type {scheduler.config.variance_type!r} is not supported; "
                         f"use 'fixed_small', 'fixed_small_log' or 'fixed_large'")
    t = _batch_timesteps(timestep, sample, scheduler)
    index = _schedule_index(scheduler, t)                               # (B,)
    timesteps = scheduler.timesteps.to(sample.device)
    prev_t = torch.cat([timesteps, timesteps.new_tensor([-1])])[index + 1]
    alphas_cumprod = scheduler.alphas_cumprod.to(sample.device, torch.float32)
    alpha_bar_t = alphas_cumprod[t]
    alpha_bar_prev = torch.where(prev_t >= 0, alphas_cumprod[prev_t.clamp(min=0)], torch.ones(()))
    beta_t = 1 - alpha_bar_t / alpha_bar_prev
    x0_hat, _ = predict_x0_eps(scheduler, model_output, sample, alpha_bar_t)
    a_t, a_prev, b_t = (_per_sample(v, sample) for v in (alpha_bar_t, alpha_bar_prev, beta_t))
    mean = (a_prev.sqrt() * b_t * x0_hat + (1 - b_t).sqrt() * (1 - a_prev) * sample.float()) / (1 - a_t)
    if scheduler.config.variance_type == "fixed_large":
        variance = beta_t
    else:  # 0 on the last step, to x_0 (alpha_bar_prev = 1), where diffusers clamps it to 1e-20 for its log
        variance = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t
    sigma_t = _floor(torch.where(t > 0, variance.sqrt(), torch.zeros(())))  # diffusers adds no noise at t = 0
    return mean, sigma_t


def flow_mean_and_sigma(scheduler, model_output, timestep, sample, noise_level=0.7):
    """The Gaussian of a step of Flow-GRPO's SDE (FLOW.md): (mu (B, C, H, W), std (B,)), fp32.

    Rectified flow: x_sigma = (1 - sigma) x_0 + sigma noise, v = noise - x_0. From sigma to the next sigma of
    the schedule, dt = sigma_next - sigma < 0, with exploration noise s = noise_level * sqrt(sigma / (1 - sigma)):
        mu  = x + [v + s^2 / (2 sigma) (x + (1 - sigma) v)] dt,    std = s sqrt(-dt),
    the Euler-Maruyama step of dx = [v + s^2/(2 sigma) (x + (1 - sigma) v)] dt + s dw, whose marginals are the
    ODE's (x + (1 - sigma) v is the predicted noise, -sigma times the score). At sigma = 1, s uses 1 - sigma_1
    (the schedule's second sigma) as Flow-GRPO does; that step's std is then noise_level whatever the schedule.
    std is the step's standard deviation (DDIM's sigma_t), not the flow time sigma; a step from sigma = 0
    (std 0) is deterministic.
    Provenance: the SDE of Liu et al. 2025 (Flow-GRPO), written here from its equations and checked against
    yifan123/flow_grpo's sde_step_with_logprob (diffusers_patch/sd3_sde_with_logprob.py): the same next sample
    for the same noise (to 5e-7) and the same log-prob (to 5e-6), on every step of 1- to 40-step schedules
    (shift 1 and 3, noise levels 0.3 to 1). Unlike it, a timestep may be a number, and a step from sigma = 0
    is deterministic rather than 0/0.
    """
    _check_type(scheduler, FlowMatchEulerDiscreteScheduler, "flow_sde_step_with_logprob")
    _check_ready(scheduler)
    if scheduler.config.get("invert_sigmas", False):
        raise ValueError("schedulers with invert_sigmas=True are not supported (sigma must fall from 1 to 0, as "
                         "SD3's does); set invert_sigmas=False")
    if not (math.isfinite(noise_level) and noise_level > 0):
        raise ValueError(f"noise_level must be a finite number > 0 for a stochastic flow step with a log-probability "
                         f"(0 is the deterministic ODE; Flow-GRPO uses 0.7); got noise_level={noise_level}")
    sigmas, index = _flow_schedule(scheduler, timestep, sample)
    sigma, sigma_next = sigmas[index], sigmas[index + 1]                 # (B,)
    dt = sigma_next - sigma                                               # (B,), < 0
    denominator = 1 - torch.where(sigma == 1, sigmas[1], sigma)         # 1 - sigma; 1 - sigma_1 at sigma = 1
    s = noise_level * (sigma / denominator).sqrt()                        # (B,)
    # s^2 / (2 sigma) as noise_level^2 / (2 (1 - sigma)): the same, and finite at sigma = 0
    k, sigma_, dt_ = (_per_sample(u, sample) for u in (noise_level**2 / (2 * denominator), sigma, dt))
    x, v = sample.float(), model_output.float()
    mean = x + (v + k * (x + (1 - sigma_) * v)) * dt_
    return mean, _floor(s * (-dt).sqrt())


def flow_ode_step(scheduler, model_output, timestep, sample):
    """The flow ODE's Euler step x + v (sigma_next - sigma), deterministic (FlowMatchEulerDiscreteScheduler.step's
    result, without its step counter): the steps outside an SDE window (MixGRPO). timestep as for the SDE step."""
    _check_type(scheduler, FlowMatchEulerDiscreteScheduler, "flow_ode_step")
    _check_ready(scheduler)
    sigmas, index = _flow_schedule(scheduler, timestep, sample)
    dt = _per_sample(sigmas[index + 1] - sigmas[index], sample)
    return (sample.float() + model_output.float() * dt).to(sample.dtype)


def _flow_schedule(scheduler, timestep, sample):
    """A flow scheduler's sigmas (T+1,) fp32 on sample's device, ending with 0, and the position (B,) of each
    sample's timestep (a number or a (B,) tensor) in its schedule."""
    t = torch.as_tensor(timestep, device=sample.device, dtype=torch.float32)
    return scheduler.sigmas.to(sample.device, torch.float32), _schedule_index(scheduler, _per_batch(t, sample))


def mean_and_sigma(scheduler, model_output, timestep, sample, eta=1.0, noise_level=0.7):
    """The Gaussian of a DDIM, DDPM or flow SDE step: (mu_theta (B, C, H, W), sigma_t (B,)), by scheduler type."""
    if isinstance(scheduler, FlowMatchEulerDiscreteScheduler):
        return flow_mean_and_sigma(scheduler, model_output, timestep, sample, noise_level)
    if isinstance(scheduler, DDIMScheduler):
        return ddim_mean_and_sigma(scheduler, model_output, timestep, sample, eta)
    if isinstance(scheduler, DDPMScheduler):
        return ddpm_mean_and_sigma(scheduler, model_output, timestep, sample)
    raise _unsupported(scheduler)


def step_sigmas(scheduler, eta=1.0, noise_level=0.7):
    """sigma_t (a flow step's std) of every step of the scheduler's current schedule, (T,) fp32."""
    _check_ready(scheduler)
    x = torch.zeros(len(scheduler.timesteps), 1, 1, 1)
    return mean_and_sigma(scheduler, x, scheduler.timesteps, x, eta, noise_level)[1]


def _gaussian_step(mean, sigma, sample, prev_sample, generator, reduce, timestep):
    """Sample x_{t-1} ~ N(mean, sigma^2) (or take the given one) and return it with its log-probability.

    Where sigma_t = 0 (below SIGMA_MIN: DDIM with steps_offset=0 at its last step, DDPM's last step, a flow
    step from sigma = 0) the step is deterministic: sampling through it is fine and its log_prob is reported as
    0, but asking for the density of a given x_{t-1} there is an error, because it has none (DDPO's code returns
    NaN, and one PPO update on it turns the weights to NaN). DiffusionPolicy never trains on steps with small
    sigma_t.
    """
    deterministic = sigma == 0                                          # (B,)
    if prev_sample is not None and bool(deterministic.any()):
        t = torch.as_tensor(timestep, device=sigma.device).expand(len(sample))[deterministic].tolist()
        raise ValueError(f"log-probability requested at timestep(s) {t} where sigma_t = 0 (or below SIGMA_MIN="
                         f"{SIGMA_MIN:.1e}): a deterministic step has no density. DDIMScheduler with "
                         f"steps_offset=0 and DDPMScheduler end on such a step, and a flow step from sigma = 0 is "
                         f"one; leave these steps out of training")
    if prev_sample is None:
        noise = randn_tensor(mean.shape, generator=generator, device=mean.device, dtype=torch.float32)
        prev_sample = mean + _per_sample(sigma, mean) * noise
    prev_sample = prev_sample.float()
    log_prob = gaussian_log_prob(prev_sample, mean, sigma.masked_fill(deterministic, 1.0), reduce)
    log_prob = torch.where(deterministic.to(log_prob.device), torch.zeros_like(log_prob), log_prob)
    return prev_sample.to(sample.dtype), log_prob


def _unsupported(scheduler):
    return TypeError(f"scheduler {type(scheduler).__name__} is not supported: use DDIMScheduler (with "
                     f"eta > 0) or DDPMScheduler for a UNet, e.g. DDIMScheduler.from_config(pipe.scheduler.config), "
                     f"or FlowMatchEulerDiscreteScheduler for a flow-matching model (SD3)")


def _check_type(scheduler, cls, step):
    """A TypeError naming the step, the scheduler it needs and the one given."""
    if not isinstance(scheduler, cls):
        hint = ("mdp.step_with_logprob picks the step by scheduler type" if isinstance(scheduler, SUPPORTED)
                else f"use {cls.__name__}.from_config(scheduler.config)")
        raise TypeError(f"{step} needs a diffusers {cls.__name__}; got {type(scheduler).__name__} ({hint})")


def predict_x0_eps(scheduler, model_output, sample, alpha_bar_t):
    """x0_hat and eps_hat from the model output, by the scheduler's prediction_type; x0_hat clipped as it does."""
    config = scheduler.config
    if config.get("thresholding", False):
        raise ValueError("schedulers with thresholding=True are not supported (Stable Diffusion does not "
                         "use it); set thresholding=False")
    out, x = model_output.float(), sample.float()
    a, b = _per_sample(alpha_bar_t, x), _per_sample(1 - alpha_bar_t, x)
    if config.prediction_type == "epsilon":
        x0_hat, eps_hat = (x - b.sqrt() * out) / a.sqrt(), out
    elif config.prediction_type == "sample":
        x0_hat, eps_hat = out, (x - a.sqrt() * out) / b.sqrt()
    elif config.prediction_type == "v_prediction":
        x0_hat, eps_hat = a.sqrt() * x - b.sqrt() * out, a.sqrt() * out + b.sqrt() * x
    else:
        raise ValueError(f"prediction_type {config.prediction_type!r} is not supported; use one of {PREDICTION_TYPES}")
    if config.clip_sample:
        x0_hat = x0_hat.clamp(-config.clip_sample_range, config.clip_sample_range)
    return x0_hat, eps_hat


def _check_ready(scheduler):
    if getattr(scheduler, "num_inference_steps", None) is None:
        raise ValueError("the scheduler has no schedule yet: call scheduler.set_timesteps(num_steps) first")


def _per_batch(t, sample):
    """A 0-d or (B,) timestep tensor as (B,), one per sample."""
    if t.ndim == 0:
        t = t.expand(len(sample))
    if t.shape != (len(sample),):
        raise ValueError(f"timestep must be a number or a tensor of shape ({len(sample)},); got shape {tuple(t.shape)}")
    return t


def _schedule_index(scheduler, t):
    """The position of each timestep t (B,) in scheduler.timesteps; a ValueError names those not in it."""
    timesteps = scheduler.timesteps.to(t.device, t.dtype)
    values, inverse = t.unique(return_inverse=True)                    # (U,), often one for the whole batch
    found = timesteps[None, :] == values[:, None]                       # (U, T)
    if not bool(found.any(1).all()):
        raise ValueError(f"timesteps {values[~found.any(1)].tolist()} are not in the scheduler's schedule "
                         f"{timesteps.tolist()}; pass values of scheduler.timesteps after set_timesteps")
    return found.int().argmax(1)[inverse]                               # (B,)


def _batch_timesteps(timestep, sample, scheduler):
    """timestep (int, 0-d or (B,) tensor) as a (B,) long tensor on sample's device, checked against the schedule."""
    t = _per_batch(torch.as_tensor(timestep, device=sample.device).long(), sample)
    n, offset = scheduler.config.num_train_timesteps, scheduler.config.steps_offset
    outside = (t < 0) | (t >= n)
    if bool(outside.any()):
        raise ValueError(f"timesteps must be in [0, {n}) (the scheduler's num_train_timesteps); got "
                         f"{t[outside].unique().tolist()}; steps_offset={offset} shifts the schedule: use at "
                         f"most {n - offset} inference steps")
    return t


def _floor(sigma_t):
    """sigma_t with values below SIGMA_MIN set to 0: those steps are deterministic (see the module docstring)."""
    return torch.where(sigma_t >= SIGMA_MIN, sigma_t, torch.zeros(()))


def _per_sample(v, like):
    """A (B,) tensor as (B, 1, 1, ...) to broadcast against `like`."""
    return v.to(like.device, torch.float32).reshape(-1, *([1] * (like.ndim - 1)))
