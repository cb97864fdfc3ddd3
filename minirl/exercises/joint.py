"""Checker for notebook 7 (multi-task joint training): the share of a single-task gain the joint model keeps."""

from minirl.tinyworld import demo
from minirl.exercises import check

CASES = [([0.4], [0.5]), ([0.3, 0.5, 0.2], [0.4, 0.5, 0.25]), ([-0.1, 0.2], [0.2, 0.1]), ([0.1, 0.3], [-0.2, 0.6])]


def check_kept_share(kept_share):
    """kept_share(joint_gains, single_gains) -> (shares per seed, mean share), as minirl.tinyworld.demo.kept_share: None for
    a seed whose single-task run did not gain, the mean over the other seeds."""
    return check("kept_share", kept_share, demo.kept_share, CASES)
