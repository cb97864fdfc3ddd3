import pytest
import torch

from minirl.advantages import PerPromptStatTracker, clip, group_relative, normalize


def test_normalized_advantages_have_mean_0_std_1():
    a = normalize(torch.randn(64) * 7 + 3)
    assert abs(a.mean().item()) < 1e-6
    assert a.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-6)


def test_per_prompt_tracker_hand_example():
    tracker = PerPromptStatTracker(buffer_size=4, min_count=3)
    # first call: each prompt has 2 < 3 rewards -> the batch's stats (mean 2.5, population std sqrt(1.25))
    a = tracker.update(["cat", "dog", "cat", "dog"], torch.tensor([1.0, 2.0, 3.0, 4.0]))
    torch.testing.assert_close(a, (torch.tensor([1.0, 2.0, 3.0, 4.0]) - 2.5) / 1.25**0.5)
    # second call: cat has [1, 3, 5] (mean 3, std sqrt(8/3)); dog has [2, 4] + nothing -> still batch stats
    a = tracker.update(["cat"], torch.tensor([5.0]))
    torch.testing.assert_close(a, torch.tensor([(5.0 - 3.0) / (8 / 3) ** 0.5]))
    # buffer of 4 keeps the newest: cat [3, 5, 7, 9] after two more
    tracker.update(["cat", "cat"], torch.tensor([7.0, 9.0]))
    assert list(tracker.stats["cat"]) == [3.0, 5.0, 7.0, 9.0]
    state = tracker.state_dict()
    fresh = PerPromptStatTracker()
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state


def test_group_relative_and_clip():
    r = torch.tensor([1.0, 3.0, 10.0, 20.0])
    a = group_relative(r, [0, 0, 1, 1])
    torch.testing.assert_close(a, torch.tensor([-1.0, 1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="group 1 has 1 sample"):
        group_relative(r, [0, 0, 0, 1])
    torch.testing.assert_close(clip(torch.tensor([-7.0, 0.5, 9.0]), 5), torch.tensor([-5.0, 0.5, 5.0]))


@pytest.mark.parametrize("value", [0.7, 0.1, 123.456])
def test_equal_rewards_give_zero_advantages(value):
    # float32 arithmetic gives +-0.856 for 0.7: the mean's rounding error over a std of the same size
    rewards = torch.full((8,), value)
    assert normalize(rewards).dtype == torch.float32
    assert normalize(rewards).abs().max().item() == 0.0
    a = group_relative(torch.cat([rewards, torch.tensor([0.0, 1.0])]), [0] * 8 + [1, 1])
    torch.testing.assert_close(a, torch.tensor([0.0] * 8 + [-1.0, 1.0]))
