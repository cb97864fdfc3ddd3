import pytest
import torch

from minirl.rewards import get_reward, jpeg_compressibility, jpeg_incompressibility, jpeg_size_kb, validate


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
    with pytest.raises(ValueError, match="unknown reward 'aesthetic'; available: \\['jpeg_compressibility'"):
        get_reward("aesthetic")


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
