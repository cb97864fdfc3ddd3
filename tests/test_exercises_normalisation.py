"""The checkers of notebook 05 pass minirl's reference, fail plausible wrong answers, and report a stub."""

import torch

from minirl import advantages
from minirl.exercises.normalisation import check_group_relative, check_normalize


def stub(*args):
    raise NotImplementedError


def test_normalize_checker():
    assert check_normalize(advantages.normalize)
    assert not check_normalize(lambda r: (r - r.mean()) / (r.std() + 1e-8))   # sample std (ddof 1)
    assert not check_normalize(lambda r: (r - r.mean()) / r.std(unbiased=False))  # no eps: NaN when std is 0
    assert not check_normalize(lambda r: r - r.mean())                        # not scaled


def test_group_relative_checker():
    assert check_group_relative(advantages.group_relative)
    assert not check_group_relative(lambda r, g: advantages.normalize(r))     # statistics of the whole batch

    def blocks_of_four(r, g):                                                  # assumes contiguous groups of 4
        return torch.cat([advantages.normalize(part) for part in r.split(4)])
    assert not check_group_relative(blocks_of_four)


def test_in_place_edits_do_not_fool_the_checker():
    def in_place(r):
        r -= r.mean()
        r /= r.std(unbiased=False) + 1e-8
        return r
    assert check_normalize(in_place)


def test_stubs_are_reported_not_attempted(capsys):
    assert not check_normalize(stub)
    assert not check_group_relative(stub)
    assert capsys.readouterr().out.count("not attempted") == 2


def test_teachers_solutions_pass():
    from minirl.exercises.solutions import normalisation as solution
    assert check_normalize(solution.normalize)
    assert check_group_relative(solution.group_relative)
