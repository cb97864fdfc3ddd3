"""Checker of notebook 06 (distribution rewards): statistical parity (paper Eq. 12), compared with
`minirl.rewards.statistical_parity` on fixed label batches."""

import torch

from minirl.exercises import check
from minirl.rewards import statistical_parity


def _cases():
    g = torch.Generator().manual_seed(12)
    return [
        (torch.arange(16) % 4, 4),                          # 4 of each colour: 0
        (torch.zeros(16, dtype=torch.long), 4),             # all red: 0.75
        (torch.tensor([0] * 8 + [2] * 8), 4),               # two colours, none of the others: 0.25
        (torch.tensor([3] * 13 + [1] * 3), 4),              # the last class present, the first absent
        (torch.randint(0, 4, (16,), generator=g), 4),
        (torch.randint(0, 2, (10,), generator=g), 2),       # any number of classes and samples
        (torch.tensor([0, 0, 1, 2]), 5),                    # classes never predicted still count
    ]


def check_statistical_parity(student_fn):
    """student_fn(labels (N,) class indices, num_classes) -> SP, a number (a 0-d tensor or a float)."""
    return check("statistical_parity (Eq. 12)", student_fn, statistical_parity, _cases(), descriptions=[
        "4 of each colour: SP 0", "all red: SP 0.75, the largest for 4 classes",
        "8 red and 8 blue: the two absent colours count too", "the last class present, the first absent",
        "a random batch of 16", "2 classes, 10 samples", "5 classes of which 2 are never predicted"])
