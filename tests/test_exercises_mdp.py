"""The checkers of notebook 02's exercises pass minirl's functions and an independent solution, and fail
plausible wrong answers (and a stub) without raising."""

import math

import pytest
import torch

from minirl.exercises.solutions import mdp as solution
from minirl.exercises.mdp import check_ddim_sigmas, check_gaussian_log_prob
from minirl.mdp import gaussian_log_prob, step_sigmas

HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)


def log_prob_by_hand(x, mean, sigma, reduce="mean", half_log_two_pi=HALF_LOG_TWO_PI):
    sigma = sigma.view(-1, *[1] * (x.ndim - 1))
    log_p = (-((x - mean) ** 2) / (2 * sigma**2) - torch.log(sigma) - half_log_two_pi).flatten(1)
    return log_p.mean(1) if reduce == "mean" else log_p.sum(1)


def sigmas_by_hand(scheduler, eta, final_alpha=None):
    a = scheduler.alphas_cumprod
    t = scheduler.timesteps
    prev_t = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    final = scheduler.final_alpha_cumprod if final_alpha is None else torch.as_tensor(final_alpha)
    a_prev = torch.where(prev_t >= 0, a[prev_t.clamp(min=0)], final)
    return eta * ((1 - a_prev) / (1 - a[t]) * (1 - a[t] / a_prev)).sqrt()


def stub(*args):
    raise NotImplementedError


@pytest.mark.parametrize("right", [gaussian_log_prob, log_prob_by_hand, solution.gaussian_log_prob])
def test_gaussian_log_prob_checker_passes(right, capsys):
    assert check_gaussian_log_prob(right)
    assert "[PASS]" in capsys.readouterr().out


@pytest.mark.parametrize("wrong", [
    lambda x, mean, sigma, reduce: log_prob_by_hand(x, mean, sigma, "sum"),           # the reduction ignored
    lambda x, mean, sigma, reduce: log_prob_by_hand(x, mean, sigma, reduce, 0.0),      # no normalising constant
    lambda x, mean, sigma, reduce: log_prob_by_hand(x, mean, sigma**2, reduce),        # variance for std
])
def test_gaussian_log_prob_checker_fails(wrong, capsys):
    assert not check_gaussian_log_prob(wrong)
    assert "[FAIL]" in capsys.readouterr().out


@pytest.mark.parametrize("right", [step_sigmas, sigmas_by_hand, solution.ddim_sigmas])
def test_ddim_sigmas_checker_passes(right, capsys):
    assert check_ddim_sigmas(right)
    assert "[PASS]" in capsys.readouterr().out


@pytest.mark.parametrize("wrong", [
    lambda scheduler, eta: sigmas_by_hand(scheduler, 1.0),                     # eta forgotten
    lambda scheduler, eta: sigmas_by_hand(scheduler, eta, final_alpha=1.0),    # the last step always to alpha = 1
    lambda scheduler, eta: eta * (1 - scheduler.alphas_cumprod[scheduler.timesteps]).sqrt(),  # the noise level
])
def test_ddim_sigmas_checker_fails(wrong, capsys):
    assert not check_ddim_sigmas(wrong)
    assert "[FAIL]" in capsys.readouterr().out


def test_ddim_sigmas_checker_fails_alphas_cumprod_0_for_the_last_step(capsys):
    """The classic bug: the alpha-bar after the last step taken as alphas_cumprod[0]. It agrees with
    final_alpha_cumprod when set_alpha_to_one=False, so only the set_alpha_to_one=True, steps_offset=1 case
    catches it, and the message says which case that is."""
    def first_alpha(scheduler, eta):
        return sigmas_by_hand(scheduler, eta, final_alpha=scheduler.alphas_cumprod[0])
    assert not check_ddim_sigmas(first_alpha)
    out = capsys.readouterr().out
    assert "[FAIL]" in out and "case 4 (last step with set_alpha_to_one=True, steps_offset=1" in out


def test_stubs_are_not_attempted(capsys):
    assert not check_gaussian_log_prob(stub)
    assert not check_ddim_sigmas(stub)
    assert capsys.readouterr().out.count("not attempted") == 2


def test_a_failure_shows_the_first_differing_entries(capsys):
    """With alphas_cumprod[0] for the alpha-bar after the last step only the last of 10 sigmas differs: the
    message names that entry and both values, not the first entries, where the answers agree."""
    def first_alpha(scheduler, eta):
        return sigmas_by_hand(scheduler, eta, final_alpha=scheduler.alphas_cumprod[0])
    scheduler, eta = _last_case()
    got, want = first_alpha(scheduler, eta), step_sigmas(scheduler, eta)
    assert not check_ddim_sigmas(first_alpha)
    out = capsys.readouterr().out
    assert "1 of 10 values differ" in out, out
    assert f"[9] got {got[9].item():.6g}, expected {want[9].item():.6g}" in out, out


def _last_case():
    from minirl.exercises.mdp import _schedulers
    return _schedulers()[-1]
