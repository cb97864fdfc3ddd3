"""The checker of notebook 06 passes minirl's statistical parity, fails plausible wrong answers, and reports
a stub."""

import torch

from minirl.exercises.parity import check_statistical_parity
from minirl.rewards import statistical_parity


def test_statistical_parity_checker():
    assert check_statistical_parity(statistical_parity)
    assert check_statistical_parity(lambda labels, k: float(statistical_parity(labels, k)))  # a float is fine


def test_wrong_answers_fail():
    def shares(labels, k):
        return torch.bincount(labels, minlength=k).float() / len(labels)
    assert not check_statistical_parity(lambda labels, k: (shares(labels, k) - 1 / k).abs().sum())   # |.|
    assert not check_statistical_parity(lambda labels, k: ((shares(labels, k) - 1 / k) ** 2).mean())  # mean
    assert not check_statistical_parity(                                      # only the classes that occur
        lambda labels, k: ((torch.bincount(labels).float() / len(labels) - 1 / k) ** 2).sum())


def test_stub_is_reported_not_attempted(capsys):
    def stub(labels, num_classes):
        raise NotImplementedError
    assert not check_statistical_parity(stub)
    assert "not attempted" in capsys.readouterr().out


def test_teachers_solution_passes():
    from minirl.exercises.solutions import parity as solution
    assert check_statistical_parity(solution.statistical_parity)
