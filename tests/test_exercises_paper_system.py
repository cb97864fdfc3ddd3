"""The checkers of notebook 09 pass minirl's own functions, fail plausible wrong answers, report a stub, and
never raise."""

import torch

from minirl.exercises.paper_system import check_relative_position, check_soft_statistical_parity
from minirl.exercises.solutions import paper_system as solution
from minirl.rewards import statistical_parity
from minirl.rewards.composition import POSITION_THRESHOLD, relative_position


def test_soft_statistical_parity_checker():
    assert check_soft_statistical_parity(lambda probs: statistical_parity(probs, probs.shape[1]))
    assert check_soft_statistical_parity(solution.soft_statistical_parity)
    assert check_soft_statistical_parity(lambda probs: float(((probs.mean(0) - 1 / probs.shape[1]) ** 2).sum()))


def test_soft_statistical_parity_wrong_answers_fail(capsys):
    def hard(probs):  # the paper's hard labels: argmax, then label frequencies
        k = probs.shape[1]
        return ((torch.bincount(probs.argmax(1), minlength=k).float() / len(probs) - 1 / k) ** 2).sum()
    assert not check_soft_statistical_parity(hard)
    assert "case 0 (every image unsure, p = 1/4 for each class: soft SP 0)" in capsys.readouterr().out
    assert not check_soft_statistical_parity(lambda p: ((p.mean(0) - 1 / p.shape[1]) ** 2).mean())   # mean, not sum
    assert not check_soft_statistical_parity(lambda p: (p.mean(0) - 1 / p.shape[1]).abs().sum())     # |.|, not ^2
    assert not check_soft_statistical_parity(lambda p: ((p.sum(0) - 1 / p.shape[1]) ** 2).sum())    # counts, not shares
    assert not check_soft_statistical_parity(lambda p: ((p.mean(1) - 1 / p.shape[1]) ** 2).sum())   # wrong axis
    assert not check_soft_statistical_parity(lambda p: (p.mean(0) ** 2).sum())                       # no 1/K


def _geneval(box_a, box_b, threshold=POSITION_THRESHOLD, y_down=True, raw_norm=True):
    """relative_position with one detail changed, for the wrong answers."""
    offset = (box_a[:2] + box_a[2:] - box_b[:2] - box_b[2:]) / 2
    sizes = (box_a[2:] - box_a[:2]).abs() + (box_b[2:] - box_b[:2]).abs()
    revised = (offset.abs() - threshold * sizes).clamp_min(0) * offset.sign()
    if not revised.any():
        return set()
    dx, dy = (revised / (offset if raw_norm else revised).norm()).tolist()
    dy = dy if y_down else -dy
    return {name for name, holds in (("left of", dx < -0.5), ("right of", dx > 0.5), ("above", dy < -0.5),
                                     ("below", dy > 0.5)) if holds}


def test_relative_position_checker():
    assert check_relative_position(relative_position)
    assert check_relative_position(solution.relative_position)
    assert check_relative_position(_geneval)
    assert check_relative_position(lambda a, b: sorted(relative_position(a, b)))  # any collection of names


def test_relative_position_wrong_answers_fail(capsys):
    assert not check_relative_position(lambda a, b: _geneval(a, b, threshold=0.0))     # no dead zone
    assert "case 3 (close centres: after the dead zone" in capsys.readouterr().out
    assert not check_relative_position(lambda a, b: _geneval(a, b, y_down=False))      # y pointing up
    assert not check_relative_position(lambda a, b: _geneval(a, b, raw_norm=False))    # normalised by the revised
    assert not check_relative_position(                                                # corners, not centres
        lambda a, b: _geneval(torch.cat([a[:2], a[:2]]), torch.cat([b[:2], b[:2]])))


def test_stubs_are_reported_not_attempted_and_nothing_raises(capsys):
    def stub(*args):
        raise NotImplementedError
    assert not check_soft_statistical_parity(stub)
    assert not check_relative_position(stub)
    assert capsys.readouterr().out.count("not attempted") == 2
    assert not check_relative_position(lambda a, b: 1 / 0)
    assert not check_relative_position(lambda a, b: "left of")                         # a string is not a set
    assert not check_relative_position(lambda a, b: {"left"})
    assert not check_soft_statistical_parity(lambda p: None)
    assert "FAIL" in capsys.readouterr().out
