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
