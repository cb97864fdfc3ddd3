"""The checker of notebook 04 passes minirl's clipped surrogate, fails plausible wrong answers, reports a stub."""

import torch

from minirl import losses
from minirl.exercises.ppo import check_ppo_loss
from minirl.exercises.solutions.ppo import ppo_loss as solution


def stub(*args):
    raise NotImplementedError


def clipped(log_prob, old, a, eps):
    w = torch.exp(log_prob - old)
    return -torch.minimum(w * a, torch.clamp(w, 1 - eps, 1 + eps) * a).mean()


def test_ppo_checker_passes_the_reference():
    assert check_ppo_loss(losses.ppo_loss)  # (loss, info) is accepted
    assert check_ppo_loss(clipped)          # and a bare loss
    assert check_ppo_loss(solution)         # the teachers' answer


def test_ppo_checker_fails_wrong_answers(capsys):
    def only_clipped(log_prob, old, a, eps):        # no min: the pessimistic bound is lost
        return -(torch.clamp(torch.exp(log_prob - old), 1 - eps, 1 + eps) * a).mean()

    def maximum(log_prob, old, a, eps):             # max instead of min: optimistic, never stops
        w = torch.exp(log_prob - old)
        return -torch.maximum(w * a, torch.clamp(w, 1 - eps, 1 + eps) * a).mean()

    def inverted_ratio(log_prob, old, a, eps):      # p_old / p_theta
        return clipped(old, log_prob, a, eps)

    def unclipped(log_prob, old, a, eps):           # importance sampling without the clip
        return -(torch.exp(log_prob - old) * a).mean()

    for wrong in (only_clipped, maximum, inverted_ratio, unclipped):
        assert not check_ppo_loss(wrong), wrong.__name__
    assert "case 0 (8 samples, eps 0.2, ratios inside and outside the clip range)" in capsys.readouterr().out


def test_stub_is_reported_not_attempted(capsys):
    assert not check_ppo_loss(stub)
    assert "not attempted" in capsys.readouterr().out
