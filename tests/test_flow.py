"""Reference tests for the flow-matching SDE step (Flow-GRPO): on a Gaussian data distribution, whose exact
velocity field is known in closed form, the SDE reproduces the ODE's marginals; torch.distributions gives the
log-probability; diffusers' FlowMatchEulerDiscreteScheduler.step gives the deterministic limit."""

import copy
import math

import pytest
import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler
from torch.distributions import Normal

from minirl import mdp
from minirl.mdp import flow_mean_and_sigma, flow_sde_step_with_logprob
from minirl.sd import SD3_SHIFT, sd_scheduler

# data x0 ~ N(M, S) in 2-D; rectified flow x_sigma = (1 - sigma) x0 + sigma noise, noise ~ N(0, I)
M = torch.tensor([1.0, -0.5], dtype=torch.float64)
S = torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=torch.float64)
I2 = torch.eye(2, dtype=torch.float64)


def marginal(sigma):
    """The true marginal of x_sigma: N((1 - sigma) M, C_sigma), C_sigma = (1 - sigma)^2 S + sigma^2 I."""
    return (1 - sigma) * M, (1 - sigma) ** 2 * S + sigma**2 * I2


def exact_velocity(x, sigma):
    """v*(x, sigma) = E[noise - x0 | x_sigma = x]. (x_sigma, x0, noise) are jointly Gaussian, with
    Cov(x0, x_sigma) = (1 - sigma) S and Cov(noise, x_sigma) = sigma I, so E[x0 | x] = M + (1 - sigma) S C^-1 (x - mu)
    and E[noise | x] = sigma C^-1 (x - mu): v* = -M + (sigma I - (1 - sigma) S) C^-1 (x - mu). x (N, 2)."""
    mu, C = marginal(sigma)
    A = (sigma * I2 - (1 - sigma) * S) @ torch.linalg.inv(C)
    return -M + (x.double() - mu) @ A.T


def flow_scheduler(steps=10, shift=SD3_SHIFT, sigmas=None):
    s = FlowMatchEulerDiscreteScheduler(shift=shift)
    s.set_timesteps(steps if sigmas is None else None, sigmas=sigmas)
    return s


def run_chains(scheduler, x, noise_level, seed):
    """Step every chain through the schedule with the exact velocity; yields (sigma_next, x_next) per step."""
    g = torch.Generator().manual_seed(seed)
    sigmas = scheduler.sigmas.double()
    for i, t in enumerate(scheduler.timesteps):
        v = exact_velocity(x, float(sigmas[i])).float()
        x, _ = flow_sde_step_with_logprob(scheduler, v, t, x, noise_level=noise_level, generator=g)
        yield float(sigmas[i + 1]), x


def assert_matches_marginal(x, sigma, z=5.0):
    """Mean and covariance of the chains equal the true marginal within z standard errors: SE(mean_i) =
    sqrt(C_ii / N), SE(C_ij) = sqrt((C_ii C_jj + C_ij^2) / N) (Gaussian sample covariance). Returns the
    largest errors in standard errors, (mean, covariance)."""
    n, (mu, C) = len(x), marginal(sigma)
    x = x.double()
    se_mean = (C.diagonal() / n).sqrt()
    se_cov = ((C.diagonal()[:, None] * C.diagonal()[None, :] + C**2) / n).sqrt()
    mean_err, cov_err = (x.mean(0) - mu).abs(), (torch.cov(x.T) - C).abs()
    assert bool((mean_err < z * se_mean).all()), (sigma, mean_err / se_mean)
    assert bool((cov_err < z * se_cov).all()), (sigma, cov_err / se_cov)
    return float((mean_err / se_mean).max()), float((cov_err / se_cov).max())


def test_sde_reproduces_the_ode_marginals_on_a_gaussian():
    """50k chains from the exact marginal at sigma_0 = sigmoid(3) = 0.953, 100 steps evenly spaced in
    logit(sigma) (steps shrink where s^2 = a^2 sigma / (1 - sigma) is large). At every step the chains' mean
    and covariance equal N((1 - sigma) M, (1 - sigma)^2 S + sigma^2 I) within 5 standard errors (5 SE: 0.022
    for a mean, 0.032 for a covariance entry, near sigma = 1). The discretisation error of this schedule, found
    by propagating the step's Gaussian exactly, is at most 0.0089 in a covariance entry (1.4 SE, leaving 3.6
    for Monte Carlo); a drift correction twice or half as large gives 0.26, a noise 10% too large or small
    0.086, the ODE (noise_level -> 0) 0.020. Measured: at most 1.2 SE on a mean, 2.7 SE on a covariance."""
    n = 50_000
    scheduler = flow_scheduler(shift=1.0, sigmas=torch.sigmoid(torch.linspace(3, -5, 100)).numpy())
    sigma_0 = float(scheduler.sigmas[0])
    g = torch.Generator().manual_seed(0)
    x0 = M + torch.randn(n, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(S).T
    x = ((1 - sigma_0) * x0 + sigma_0 * torch.randn(n, 2, generator=g, dtype=torch.float64)).float()
    steps = [assert_matches_marginal(x_next, sigma) for sigma, x_next in run_chains(scheduler, x, 0.7, seed=1)]
    assert len(steps) == 100


def test_sde_keeps_the_mean_exactly_on_sd3s_schedule_from_pure_noise():
    """SD3's 10 steps (shift 3) from x_1 ~ N(0, I), the first step at sigma = 1 included: the mean at every step
    is (1 - sigma) M within 5 SE (the SDE's correction is s^2 / (2 sigma) times x + (1 - sigma) v, the predicted
    noise, whose mean is 0). The covariance is not tested here: with steps this large (and the first one's
    std equal to noise_level whatever its dt), Euler-Maruyama is off by up to 0.14 in a covariance entry (the
    Euler ODE by up to 0.19)."""
    n, scheduler = 50_000, flow_scheduler()
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(0))
    for sigma, x_next in run_chains(scheduler, x, 0.7, seed=1):
        mu, C = marginal(sigma)
        se = (C.diagonal() / n).sqrt()
        assert bool(((x_next.double().mean(0) - mu).abs() < 5 * se).all()), sigma


def by_hand(scheduler, v, i, x, a):
    """FLOW.md's step at step index i: s = a sqrt(sigma / (1 - sigma)) (1 - sigma_1 at sigma = 1),
    mu = x + [v + s^2 / (2 sigma) (x + (1 - sigma) v)] dt, std = s sqrt(-dt). In float64."""
    sigma, sigma_next = scheduler.sigmas.double()[i], scheduler.sigmas.double()[i + 1]
    dt = sigma_next - sigma
    s = a * (sigma / (1 - (scheduler.sigmas.double()[1] if sigma == 1 else sigma))).sqrt()
    x, v = x.double(), v.double()
    return x + (v + s**2 / (2 * sigma) * (x + (1 - sigma) * v)) * dt, s * (-dt).sqrt()


@pytest.mark.parametrize("a", [0.7, 0.3, 1.5])
def test_step_and_log_prob_match_the_equations_and_torch_distributions(a):
    scheduler = flow_scheduler()
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    for i, t in enumerate(scheduler.timesteps):
        prev, log_prob = flow_sde_step_with_logprob(scheduler, v, t, x, noise_level=a,
                                                    generator=torch.Generator().manual_seed(1))
        mean, std = by_hand(scheduler, v, i, x, a)
        z = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(prev.double(), mean + std * z, rtol=0, atol=1e-5)
        dens = Normal(mean, std).log_prob(prev.double()).flatten(1)
        torch.testing.assert_close(log_prob.double(), dens.mean(1), rtol=1e-5, atol=1e-5)
        _, log_prob_sum = flow_sde_step_with_logprob(scheduler, v, float(t), x, noise_level=a, prev_sample=prev,
                                                     reduce="sum")
        torch.testing.assert_close(log_prob_sum.double(), dens.sum(1), rtol=1e-5, atol=1e-3)
        m, sd = flow_mean_and_sigma(scheduler, v, t, x, a)
        torch.testing.assert_close(m.double(), mean, rtol=0, atol=1e-5)
        torch.testing.assert_close(sd.double(), std.expand(3), rtol=1e-6, atol=0)


def test_the_first_step_has_std_noise_level_and_the_last_ends_at_zero():
    scheduler = flow_scheduler()
    std = mdp.step_sigmas(scheduler, noise_level=0.7)
    assert scheduler.sigmas[0] == 1 and scheduler.sigmas[-1] == 0
    torch.testing.assert_close(std[0], torch.tensor(0.7))     # s sqrt(-dt) with 1 - sigma_1 = -dt
    assert 0 < std[-1] < 0.01 and bool((std[:-1] > 0.2).all())  # the last step, to sigma = 0, is nearly the ODE's


def test_mixed_timesteps_equal_row_by_row_steps():
    scheduler = flow_scheduler()
    x, v = torch.randn(4, 4, 8, 8), torch.randn(4, 4, 8, 8)
    t = scheduler.timesteps[[0, 3, 7, 9]]
    prev, log_prob = flow_sde_step_with_logprob(scheduler, v, t, x)
    for i in range(4):
        _, lp = flow_sde_step_with_logprob(scheduler, v[i:i + 1], float(t[i]), x[i:i + 1], prev_sample=prev[i:i + 1])
        torch.testing.assert_close(lp, log_prob[i:i + 1])


def test_small_noise_level_is_diffusers_euler_step():
    """noise_level -> 0: the mean is FlowMatchEulerDiscreteScheduler.step's x + v dt (the ODE)."""
    scheduler = flow_scheduler()
    x, v = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    for t in scheduler.timesteps:
        mean, std = flow_mean_and_sigma(scheduler, v, t, x, noise_level=1e-6)
        euler = copy.deepcopy(scheduler).step(v, t, x).prev_sample
        torch.testing.assert_close(mean, euler, rtol=0, atol=1e-6)
        assert float(std.max()) < 1e-5


def test_ode_step_is_diffusers_euler_step():
    scheduler = flow_scheduler()
    x, v = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    for t in scheduler.timesteps:
        euler = copy.deepcopy(scheduler).step(v, t, x).prev_sample
        torch.testing.assert_close(mdp.flow_ode_step(scheduler, v, t, x), euler, rtol=0, atol=1e-6)
        torch.testing.assert_close(mdp.flow_ode_step(scheduler, v, t.expand(2), x), euler, rtol=0, atol=1e-6)


def test_low_precision_model_output_is_computed_in_fp32():
    scheduler = flow_scheduler()
    x, v = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = scheduler.timesteps[2]
    prev, lp = flow_sde_step_with_logprob(scheduler, v.bfloat16(), t, x.bfloat16(),
                                          generator=torch.Generator().manual_seed(0))
    _, lp32 = flow_sde_step_with_logprob(scheduler, v.bfloat16().float(), t, x.bfloat16().float(), prev_sample=prev)
    assert prev.dtype == torch.bfloat16 and lp.dtype == torch.float32
    torch.testing.assert_close(lp, lp32, rtol=0, atol=1e-2)  # prev rounded to bf16 before its density is taken


def test_dispatch_by_scheduler_type():
    flow, ddim = flow_scheduler(), sd_scheduler()
    ddim.set_timesteps(10)
    x, v = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = flow.timesteps[4]
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    torch.testing.assert_close(mdp.step_with_logprob(flow, v, t, x, eta=0.5, noise_level=0.4, generator=g()),
                               flow_sde_step_with_logprob(flow, v, t, x, noise_level=0.4, generator=g()))
    torch.testing.assert_close(mdp.mean_and_sigma(flow, v, t, x, noise_level=0.4),
                               flow_mean_and_sigma(flow, v, t, x, 0.4))
    torch.testing.assert_close(mdp.step_with_logprob(ddim, v, 501, x, eta=0.5, noise_level=0.4, generator=g()),
                               mdp.ddim_step_with_logprob(ddim, v, 501, x, eta=0.5, generator=g()))
    assert mdp.step_sigmas(flow, noise_level=0.4).shape == (10,)


def test_a_step_from_sigma_0_is_deterministic_and_has_no_density():
    scheduler = flow_scheduler(shift=1.0, sigmas=[1.0, 0.5, 0.0])  # timesteps 1000, 500, 0; sigmas end 0, 0
    x, v = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    assert mdp.step_sigmas(scheduler).tolist()[-1] == 0
    prev, log_prob = flow_sde_step_with_logprob(scheduler, v, 0, x)
    assert torch.equal(prev, x) and torch.equal(log_prob, torch.zeros(2))
    with pytest.raises(ValueError, match=r"timestep\(s\) \[0, 0\] where sigma_t = 0.*flow step from sigma = 0"):
        flow_sde_step_with_logprob(scheduler, v, 0, x, prev_sample=prev)


NAN = float("nan")


@pytest.mark.parametrize("call, error, match", [
    (lambda f, d, x: flow_sde_step_with_logprob(f, x, 1000, x, noise_level=0.0), ValueError,
     r"noise_level must be a finite number > 0 .*got noise_level=0.0"),
    (lambda f, d, x: flow_sde_step_with_logprob(f, x, 1000, x, noise_level=-0.7), ValueError, "got noise_level=-0.7"),
    (lambda f, d, x: flow_sde_step_with_logprob(f, x, 1000, x, noise_level=NAN), ValueError, "got noise_level=nan"),
    (lambda f, d, x: flow_sde_step_with_logprob(f, x, 1000, x, noise_level=math.inf), ValueError, "got noise_level=inf"),
    (lambda f, d, x: flow_sde_step_with_logprob(d, x, 501, x), TypeError,
     r"flow_sde_step_with_logprob needs a diffusers FlowMatchEulerDiscreteScheduler; got DDIMScheduler \(mdp.step_"),
    (lambda f, d, x: mdp.ddim_step_with_logprob(f, x, 1000, x), TypeError,
     "ddim_step_with_logprob needs a diffusers DDIMScheduler; got FlowMatchEulerDiscreteScheduler"),
    (lambda f, d, x: mdp.ddpm_step_with_logprob(f, x, 1000, x), TypeError,
     "ddpm_step_with_logprob needs a diffusers DDPMScheduler; got FlowMatchEulerDiscreteScheduler"),
    (lambda f, d, x: flow_sde_step_with_logprob(f, x, 500.5, x), ValueError,
     r"timesteps \[500.5\] are not in the scheduler's schedule \[1000.0, 960.1"),
    (lambda f, d, x: flow_sde_step_with_logprob(f, x, torch.tensor([1000.0, 0.0]), x), ValueError,
     r"timesteps \[0.0\] are not in"),
    (lambda f, d, x: flow_sde_step_with_logprob(FlowMatchEulerDiscreteScheduler(), x, 1000, x), ValueError,
     "call scheduler.set_timesteps"),
    (lambda f, d, x: flow_sde_step_with_logprob(f, x, torch.tensor([1000.0] * 3), x), ValueError,
     r"timestep must be a number or a tensor of shape \(2,\)"),
])
def test_bad_input_is_named(call, error, match):
    flow, ddim = flow_scheduler(), DDIMScheduler()
    ddim.set_timesteps(10)
    with pytest.raises(error, match=match):
        call(flow, ddim, torch.randn(2, 4, 8, 8))
