"""The checker of notebook 07's exercise (the leave-one-out credit) passes the reference and the teachers'
solution, fails the common wrong answers with a hint of what each means, and reports a stub."""

import pytest
import torch

from minirl.exercises import joint
from minirl.exercises.joint import check_leave_one_out_credit
from minirl.exercises.solutions import joint as solution


def test_reference_and_solution_pass():
    assert check_leave_one_out_credit(joint.leave_one_out_credit)
    assert check_leave_one_out_credit(solution.leave_one_out_credit)


@pytest.mark.parametrize("meaning", list(joint.WRONG))
def test_wrong_answers_fail_with_their_meaning(meaning, capsys):
    assert not check_leave_one_out_credit(joint.WRONG[meaning])
    assert meaning in capsys.readouterr().out


def test_stub_is_reported_not_attempted(capsys):
    def stub(labels, num_classes):
        raise NotImplementedError
    assert not check_leave_one_out_credit(stub)
    assert "not attempted" in capsys.readouterr().out


def test_credit_by_hand():
    # 3 red, 1 blue, 4 classes: SP(B) = (3/4-1/4)^2 + (1/4-1/4)^2 + 2 (1/4)^2 = 0.375.
    # Without a red: shares (2/3, 1/3, 0, 0): SP = (5/12)^2 + (1/12)^2 + 2/16 = 0.30556 -> credit -0.06944.
    # Without the blue: all red, SP = 0.75 -> credit +0.375.
    credit = joint.leave_one_out_credit(torch.tensor([0, 0, 0, 2]), 4)
    assert credit.tolist() == pytest.approx([0.30556 - 0.375] * 3 + [0.375], abs=1e-4)


def test_kept_share_by_hand():
    # the share of a single-task gain the joint model keeps, as notebook 07's alignment-tax table prints it
    # (its exercise until the leave-one-out credit replaced it; belongs with the demo's tests)
    from minirl.tinyworld import demo
    shares, mean = demo.kept_share([0.3, 0.5], [0.4, 0.5])
    assert shares == pytest.approx([0.75, 1.0]) and mean == pytest.approx(0.875)
    assert demo.kept_share([0.1, 0.3], [-0.2, 0.6]) == ([None, 0.5], 0.5)  # no share where alone it did not gain
    assert demo.kept_share([0.1], [0.0]) == ([None], None)
