"""The checkers of notebook 10's exercises pass minirl's functions and an independent solution, and fail the
classic wrong answers (and a stub) without raising."""

import pytest
import torch

from minirl import mdp
from minirl.exercises.flow import check_flow_sde_mean, check_flow_step_stds, reference_sde_mean
from minirl.exercises.solutions import flow as solution


def mean_by_hand(x, v, sigma, sigma_next, a, correction=True, one_minus_sigma=True, s_at_next=False,
                 dt_sign=1, special_case=True):
    """The SDE step's mean, with switches for the classic wrong answers."""
    dt = dt_sign * (sigma_next - sigma)
    at = sigma_next if s_at_next else sigma
    denominator = 1 - (sigma_next if (special_case and at == 1) else at)
    s2 = a**2 * at / denominator if denominator > 0 else float("inf")
    weight = (1 - sigma) if one_minus_sigma else sigma
    return x + (v + (s2 / (2 * sigma) * (x + weight * v) if correction else 0)) * dt


def stds_by_hand(scheduler, a, special_case=True, sqrt_dt=True, sqrt_s=True):
    sigma, sigma_next = scheduler.sigmas[:-1].double(), scheduler.sigmas[1:].double()
    denominator = 1 - torch.where((sigma == 1) & special_case, scheduler.sigmas[1].double(), sigma)
    ratio = sigma / denominator
    s = a * (ratio.sqrt() if sqrt_s else ratio)
    dt = sigma_next - sigma
    return (s * ((-dt).sqrt() if sqrt_dt else dt)).float()


def stub(*args):
    raise NotImplementedError


@pytest.mark.parametrize("right", [reference_sde_mean, mean_by_hand, solution.flow_sde_mean])
def test_sde_mean_checker_passes(right, capsys):
    assert check_flow_sde_mean(right)
    assert "[PASS]" in capsys.readouterr().out


@pytest.mark.parametrize("wrong", [
    lambda *args: mean_by_hand(*args, correction=False),         # the ODE's Euler step: no s^2 correction
    lambda *args: mean_by_hand(*args, one_minus_sigma=False),    # sigma instead of 1 - sigma in the correction
    lambda *args: mean_by_hand(*args, s_at_next=True),           # s taken at sigma_next
    lambda *args: mean_by_hand(*args, dt_sign=-1),               # dt = sigma - sigma_next, the wrong sign
    lambda *args: mean_by_hand(*args, special_case=False),       # 1 / (1 - 1) at sigma = 1
])
def test_sde_mean_checker_fails(wrong, capsys):
    assert not check_flow_sde_mean(wrong)
    assert "[FAIL]" in capsys.readouterr().out


def test_sde_mean_without_the_special_case_fails_on_the_first_step(capsys):
    def no_special_case(*args):
        with torch.no_grad():
            return mean_by_hand(*args, special_case=False)
    assert not check_flow_sde_mean(no_special_case)
    out = capsys.readouterr().out
    assert "case 1 (the first step, at sigma = 1" in out and "not finite" in out


@pytest.mark.parametrize("right", [lambda s, a: mdp.step_sigmas(s, noise_level=a), stds_by_hand,
                                   solution.flow_step_stds])
def test_step_stds_checker_passes(right, capsys):
    assert check_flow_step_stds(right)
    assert "[PASS]" in capsys.readouterr().out


@pytest.mark.parametrize("wrong", [
    lambda s, a: stds_by_hand(s, a, special_case=False),         # 1 - sigma = 0 at sigma = 1: inf
    lambda s, a: stds_by_hand(s, a, sqrt_dt=False),              # s dt instead of s sqrt(-dt)
    lambda s, a: stds_by_hand(s, a, sqrt_s=False),               # s = a sigma / (1 - sigma), no square root
    lambda s, a: stds_by_hand(s, 0.7),                           # the noise level ignored
])
def test_step_stds_checker_fails(wrong, capsys):
    assert not check_flow_step_stds(wrong)
    assert "[FAIL]" in capsys.readouterr().out


def test_stubs_are_not_attempted(capsys):
    assert not check_flow_sde_mean(stub)
    assert not check_flow_step_stds(stub)
    assert capsys.readouterr().out.count("not attempted") == 2
