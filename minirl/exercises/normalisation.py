"""Checkers of notebook 05 (reward normalisation): per-batch advantages and group-relative advantages,
compared with `minirl.advantages` on fixed reward batches."""

import torch

from minirl import advantages
from minirl.exercises import check


def _normalize_cases():
    g = torch.Generator().manual_seed(5)
    return [
        (torch.randn(16, generator=g) * 3 + 2,),
        (torch.tensor([0.0, 1.0, 1.0, 1.0]),),            # 4 samples: the population std (ddof 0) matters
        (torch.tensor([1.0, 0.25, 0.5, 0.0, 1.0, 0.9]),),
        (torch.full((8,), 0.5),),                          # every reward equal: advantages 0, not NaN
    ]


def check_normalize(student_fn):
    """student_fn(rewards (N,)) -> advantages (N,): A = (r - mean) / (std + 1e-8) over the batch (Eq. 10)."""
    return check("normalize (per-batch advantages)", student_fn, advantages.normalize, _normalize_cases(),
                 descriptions=["16 random rewards", "4 rewards: the population std (ddof 0), not the sample std",
                               "6 rewards in [0, 1]", "every reward equal: advantages 0, not NaN (the 1e-8)"])


def _group_cases():
    g = torch.Generator().manual_seed(6)
    return [
        (torch.tensor([1.0, 0.0, 1.0, 1.0, 0.2, 0.4, 0.6, 0.8]), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])),
        (torch.randn(12, generator=g), torch.arange(12) % 3),            # groups interleaved, not in blocks
        (torch.randn(9, generator=g) + 5, torch.tensor([7, 7, 3, 3, 3, 7, 9, 9, 9])),  # any ids, any sizes
        (torch.tensor([1.0, 1.0, 1.0, 0.0, 0.5, 1.0]), torch.tensor([0, 0, 0, 1, 1, 1])),  # a constant group
    ]


def check_group_relative(student_fn):
    """student_fn(rewards (N,), group_ids (N,)) -> advantages (N,), normalised within each group."""
    return check("group_relative (advantages within each group)", student_fn, advantages.group_relative,
                 _group_cases(), descriptions=[
                     "two contiguous groups of 4", "3 groups interleaved, not in blocks",
                     "ids 7, 3, 9 of sizes 3, 3, 3: any ids, in any order", "a constant group: its advantages are 0"])
