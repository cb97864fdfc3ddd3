import numpy as np
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


def up(x, steps=1):
    """x moved `steps` float32 steps up: the smallest differences float32 rewards can have."""
    x = np.float32(x)
    for _ in range(steps):
        x = np.nextafter(x, np.float32(np.inf))
    return float(x)


NOISE_CASES = [  # (rewards, what float32 arithmetic gave in float64 statistics before: no signal at all)
    [1.0, up(1.0)],                       # +-0.86
    [0.7, up(0.7)],                       # +-0.75
    [123.456, up(123.456)],               # +-1.00
    [1.0, 1.0, 1.0, up(1.0)],             # -0.48 / +1.45
    [0.7, 0.7, 0.7, up(0.7)],             # -0.42 / +1.25
    [-3.0, up(-3.0, 4), -3.0, up(-3.0, 2)],  # four steps apart, below zero
]


@pytest.mark.parametrize("rewards", NOISE_CASES)
def test_rewards_a_few_float32_steps_apart_give_zero_advantages(rewards):
    r = torch.tensor(rewards)
    assert torch.equal(normalize(r), torch.zeros(len(r)))
    a = group_relative(torch.cat([r, torch.tensor([0.0, 1.0])]), [0] * len(r) + [1, 1])
    assert torch.equal(a, torch.tensor([0.0] * len(r) + [-1.0, 1.0]))
    tracker = PerPromptStatTracker(buffer_size=8, min_count=len(r))  # first the batch's stats, then the history's
    assert torch.equal(tracker.update(["cat"] * len(r), r), torch.zeros(len(r)))
    assert torch.equal(tracker.update(["dog"] * 2, torch.tensor([5.0, 6.0])), torch.tensor([-1.0, 1.0]))
    assert torch.equal(tracker.update(["cat"], r[-1:]), torch.zeros(1))


def test_small_real_spreads_keep_their_advantages():
    """1e-5 on rewards near 1 is 84 float32 steps: a signal, normalised as usual."""
    r = torch.tensor([1.0, 1.00001])
    d = (r[1].double() - r[0].double()) / 2
    expected = torch.tensor([-d / (d + 1e-8), d / (d + 1e-8)], dtype=torch.float64).float()
    torch.testing.assert_close(normalize(r), expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(group_relative(r, [3, 3]), expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(PerPromptStatTracker(min_count=2).update(["a", "a"], r), expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("rewards, match", [
    (torch.tensor([1.0, float("nan"), 2.0]), r"rewards must be finite; got \[nan\] at positions \[1\]"),
    (torch.tensor([1.0, float("inf")]), r"rewards must be finite; got \[inf\] at positions \[1\]"),
    (torch.ones(4, 1), r"rewards must be a 1-D floating point tensor \(N,\); got torch.float32 of shape \(4, 1\)"),
    (torch.ones(4, dtype=torch.long), r"got torch.int64 of shape \(4,\)"),
    ([1.0, 2.0], r"rewards must be a 1-D floating point tensor \(N,\); got list"),
])
def test_bad_rewards_are_named(rewards, match):
    for fn in (normalize, lambda r: group_relative(r, torch.zeros(len(r))),
               lambda r: PerPromptStatTracker().update(["a"] * len(r), r)):
        with pytest.raises(ValueError, match=match):
            fn(rewards)


def test_bad_group_ids_prompts_and_adv_clip():
    with pytest.raises(ValueError, match=r"group_ids must have the rewards' shape \(4,\).*got \(2, 2\)"):
        group_relative(torch.arange(4.0), [[0, 0], [1, 1]])
    with pytest.raises(ValueError, match="need one prompt per reward; got 3 prompts for 2 rewards"):
        PerPromptStatTracker().update(["a", "b", "c"], torch.ones(2))
    for adv_clip in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=rf"adv_clip must be > 0 and finite .*got {adv_clip}$"):
            clip(torch.zeros(2), adv_clip)
