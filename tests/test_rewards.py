import pytest
import torch

from minirl.rewards import blueness, load, jpeg_compressibility, jpeg_incompressibility, jpeg_size_kb, validate


def test_blueness_hand_values():
    from minirl.tinyworld.scenes import BACKGROUND, COLOURS
    images = torch.stack([torch.tensor(c).view(3, 1, 1).expand(3, 4, 4) for c in (BACKGROUND, COLOURS["red"],
                                                                                  COLOURS["blue"])])
    images[0, :, :2] = torch.tensor(COLOURS["blue"]).view(3, 1, 1)  # half blue, half grey
    rewards, info = blueness(images, None, None)
    assert torch.allclose(rewards, torch.tensor([0.4, -0.8, 0.8])) and info == {}


def test_jpeg_rewards_rank_flat_above_noise():
    flat = torch.full((1, 3, 64, 64), 0.5)
    noise = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    images = torch.cat([flat, noise])
    sizes = jpeg_size_kb(images)
    assert sizes[0] < 1.0 < 5.0 < sizes[1]  # a flat 64 px JPEG is a few hundred bytes, noise several kB
    r, info = validate("jpeg", jpeg_compressibility(images, ["a", "b"], [{}, {}]), 2)
    assert r[0] > r[1] and info == {}
    torch.testing.assert_close(jpeg_incompressibility(images, ["a", "b"], [{}, {}])[0], sizes)


@pytest.mark.parametrize("out, error, match", [
    ([1.0, 2.0], TypeError, "must return \\(rewards, info\\)"),
    (([1.0, 2.0], {}), TypeError, "rewards of type list"),
    ((torch.zeros(3), {}), ValueError, r"shape \(3,\) for a batch of 2 images; expected shape \(2,\)"),
    ((torch.zeros(2, 1), {}), ValueError, r"shape \(2, 1\)"),
    ((torch.tensor([1.0, float("nan")]), {}), ValueError, r"non-finite values \[nan\] at batch positions \[1\]"),
    ((torch.tensor([1, 2]), {}), TypeError, "dtype torch.int64"),
])
def test_validate_names_bad_rewards(out, error, match):
    with pytest.raises(error, match=match):
        validate("mine", out, 2)


def test_unknown_reward_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown reward 'aesthetics'; available: jpeg_compressibility, "
                       "jpeg_incompressibility, imagereward, pickscore"):
        load("aesthetics")


def test_statistical_parity_hand_values():
    from minirl.rewards import statistical_parity
    assert statistical_parity(torch.arange(16) % 4, 4).item() == 0.0  # 4 of each colour in 16 samples
    assert statistical_parity(torch.zeros(16, dtype=torch.long), 4).item() == pytest.approx(0.75)  # 1 - 1/4
    # 8 red, 8 blue: (0.5 - 0.25)^2 * 2 + (0.25)^2 * 2 = 0.25
    assert statistical_parity(torch.tensor([0] * 8 + [2] * 8), 4).item() == pytest.approx(0.25)
    with pytest.raises(ValueError, match=r"class indices in \[0, 4\); got \[0, 4\]"):
        statistical_parity(torch.tensor([0, 4]), 4)


def test_parity_reward_credits_the_whole_group():
    from minirl.rewards import ParityReward
    reward = ParityReward(lambda images: torch.tensor([0, 0, 1, 1]), num_classes=4)
    r, info = validate("parity", reward(torch.zeros(4, 3, 8, 8), ["a circle"] * 4, [{}] * 4), 4)
    torch.testing.assert_close(r, torch.full((4,), -0.25))  # shares (.5, .5, 0, 0): 2 * .0625 + 2 * .0625
    assert reward.distribution and info["statistical_parity"] == pytest.approx(0.25)


def test_parity_leave_one_out_credit_by_hand():
    from minirl.rewards import ParityReward
    # 3 red, 1 blue: SP = (.75 - .25)^2 + (.25 - .25)^2 + 2 * .25^2 = 0.375. Without a red: (2/3, 1/3, 0, 0)
    # -> (5/12)^2 + (1/12)^2 + 2/16 = 0.3056; without the blue: all red -> 0.75
    reward = ParityReward(lambda images: torch.tensor([0, 0, 1, 0]), num_classes=4, credit="leave_one_out")
    r, info = validate("parity", reward(torch.zeros(4, 3, 8, 8), ["a circle"] * 4, [{}] * 4), 4)
    without_red = (5 / 12) ** 2 + (1 / 12) ** 2 + 2 / 16
    torch.testing.assert_close(r, torch.tensor([without_red - 0.375] * 2 + [0.75 - 0.375, without_red - 0.375]))
    assert info["statistical_parity"] == pytest.approx(0.375)
    fair = ParityReward(lambda images: torch.tensor([0, 1, 2, 3]), num_classes=4, credit="leave_one_out")
    r, _ = fair(torch.zeros(4, 3, 8, 8), ["a circle"] * 4, [{}] * 4)
    assert (r > 0).all()  # every colour is needed: removing any sample makes the group less fair
    with pytest.raises(ValueError, match="credit must be one of .*'group', 'leave_one_out'.*got 'sample'"):
        ParityReward(lambda images: images, 4, credit="sample")


def test_leave_one_out_credit_keeps_the_policy_gradient_and_cuts_its_variance():
    """Exact expectations over every group of 3 samples from a softmax policy over 4 colours: both credits
    give the same policy gradient E[sum_i credit_i grad log p(x_i)]; leave-one-out with less variance."""
    import itertools
    from minirl.rewards import ParityReward
    logits = torch.tensor([1.5, 0.2, -0.3, 0.0], dtype=torch.float64)
    p = logits.softmax(0)
    score = torch.eye(4, dtype=torch.float64) - p  # grad of log p(colour) wrt the logits, one row a colour
    moments = {}
    for credit in ParityReward.CREDITS:
        reward = ParityReward(lambda labels: labels, 4, credit=credit)
        mean, square = 0, 0
        for group in itertools.product(range(4), repeat=3):
            labels = torch.tensor(group)
            r, _ = reward(labels, ["a circle"] * 3, [{}] * 3)
            g = (r.double()[:, None] * score[labels]).sum(0)
            mean, square = mean + p[labels].prod() * g, square + p[labels].prod() * g.pow(2).sum()
        moments[credit] = mean, square - mean.pow(2).sum()
    torch.testing.assert_close(moments["group"][0], moments["leave_one_out"][0])
    assert moments["group"][0].abs().max() > 1e-3  # a gradient worth comparing
    assert moments["leave_one_out"][1] < 0.5 * moments["group"][1]
