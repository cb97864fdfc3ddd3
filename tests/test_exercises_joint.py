"""The checker of notebook 7's exercise passes the reference and fails wrong answers."""

import pytest

from minirl.tinyworld import demo
from minirl.exercises.joint import check_kept_share


def test_reference_passes():
    assert check_kept_share(demo.kept_share)


def test_wrong_answers_fail(capsys):
    assert not check_kept_share(lambda j, s: ([a / b for a, b in zip(s, j)], 0.0))   # inverted ratio
    assert not check_kept_share(lambda j, s: ([a / b for a, b in zip(j, s)], sum(j) / sum(s)))  # ratio of sums
    ratios = lambda j, s: [a / b for a, b in zip(j, s)]  # noqa: E731
    assert not check_kept_share(lambda j, s: (ratios(j, s), sum(ratios(j, s)) / len(j)))  # shares of losses too
    def stub(j, s):
        raise NotImplementedError
    assert not check_kept_share(stub)
    assert "not attempted yet" in capsys.readouterr().out


def test_kept_share_by_hand():
    shares, mean = demo.kept_share([0.3, 0.5], [0.4, 0.5])
    assert shares == pytest.approx([0.75, 1.0]) and mean == pytest.approx(0.875)
    assert demo.kept_share([0.1, 0.3], [-0.2, 0.6]) == ([None, 0.5], 0.5)  # no share where alone it did not gain
    assert demo.kept_share([0.1], [0.0]) == ([None], None)
