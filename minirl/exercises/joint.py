"""Checker of notebook 07 (multi-task joint training): the leave-one-out credit of the parity task's group,
compared with `minirl.rewards.ParityReward(..., credit="leave_one_out")` on fixed label groups."""

import torch

from minirl.exercises import check
from minirl.rewards import ParityReward, statistical_parity


def leave_one_out_credit(labels, num_classes):
    """The reference: c_i = -SP(B) + SP(B without sample i), by ParityReward with h the identity on labels."""
    reward = ParityReward(lambda h: h, num_classes, credit="leave_one_out")
    return reward(labels, [""] * len(labels), [{}] * len(labels))[0]


def _cases():
    g = torch.Generator().manual_seed(17)
    return [
        (torch.tensor([0] * 13 + [1, 2, 3]), 4),              # 13 red and one of each other colour
        (torch.arange(16) % 4, 4),                            # already fair: every credit is positive
        (torch.zeros(16, dtype=torch.long), 4),               # all red: every credit is 0
        (torch.tensor([0] * 12 + [2] * 4), 4),                # two colours absent
        (torch.randint(0, 4, (16,), generator=g), 4),
        (torch.tensor([1, 1, 1, 0, 4]), 5),                   # other class counts and group sizes
        (torch.randint(0, 2, (6,), generator=g), 2),
    ]


DESCRIPTIONS = ["13 red and one of each other colour", "a fair group: every credit is positive",
                "all red: removing one changes nothing, every credit is 0", "two colours absent from the group",
                "a random group of 16", "5 classes, a group of 5", "2 classes, a group of 6"]


def _others(labels):
    return [torch.cat([labels[:i], labels[i + 1:]]) for i in range(len(labels))]


def _shares_over_full_group(rest, labels, k):
    """The bug of the last wrong answer: B without i's class counts divided by |B|, not |B| - 1."""
    return torch.bincount(rest, minlength=k).float() / len(labels)


# the common wrong answers, and what each means (tested in tests/test_exercises_joint.py)
SP = statistical_parity
WRONG = {
    "the group credit: every sample gets -SP(B), the paper's reward without a baseline":
        lambda labels, k: (-SP(labels, k)).repeat(len(labels)),
    "the sign is flipped: SP(B) - SP(B without i) pushes over-represented colours up":
        lambda labels, k: torch.stack([SP(labels, k) - SP(rest, k) for rest in _others(labels)]),
    "the baseline alone: SP(B without i), without the group's reward -SP(B)":
        lambda labels, k: torch.stack([SP(rest, k) for rest in _others(labels)]),
    "the group without i still divided by |B|: its shares must be over the |B| - 1 samples left":
        lambda labels, k: torch.stack([-SP(labels, k) + ((_shares_over_full_group(rest, labels, k) - 1 / k) ** 2).sum()
                                       for rest in _others(labels)]),
}


def check_leave_one_out_credit(student_fn):
    """student_fn(labels (B,) class indices of one group, num_classes) -> credits (B,):
    c_i = -SP(B) + SP(B without sample i). On a failure, says which common mistake the answer matches."""
    passed = check("leave_one_out_credit", student_fn, leave_one_out_credit, _cases(), descriptions=DESCRIPTIONS)
    if not passed:
        cases = _cases()
        try:  # the student's answers, computed once for every comparison below
            answers = [torch.as_tensor(student_fn(*case), dtype=torch.float64) for case in cases]
        except Exception:  # a stub or a crash: check() already said so
            return False
        for meaning, wrong in WRONG.items():
            expected = [torch.as_tensor(wrong(*case), dtype=torch.float64) for case in cases]
            if all(a.shape == e.shape and torch.allclose(a, e, atol=1e-5) for a, e in zip(answers, expected)):
                print(f"       your answer matches a common mistake, {meaning}")
                break
    return passed
