"""Advantages from rewards: A = (r - mean) / (std + 1e-8) (paper Eq. 10), std the population std (ddof 0)
as in DDPO and TRL, with the statistics taken over

- the whole batch, across all processes ("batch", the paper's choice: it scales to millions of prompts);
- each prompt's recent rewards ("per_prompt", DDPO's tracker: a buffer of 16, batch stats until it fills);
- each group of samples of the same prompt in this batch ("group", group-relative as in GRPO / Flow-GRPO);

and clipped to [-adv_clip, adv_clip] (DDPO 5, the paper's code 10).

Statistics are taken in float64. A spread that is rounding noise, std <= NOISE * eps * max|r| with eps the
resolution of the rewards' dtype (1.2e-7 for float32), gives advantages 0: rewards one float32 step apart
would otherwise become advantages of +-1, a full-size signal from the last bit of a reward model's output.
"""

import math
from collections import defaultdict, deque

import torch

EPS = 1e-8
NOISE = 8  # a std within 8 eps * max|r| (a few units in the last place of the rewards) is no signal


def normalize(rewards):
    """Per-batch advantages. `rewards` (N,) must be the GLOBAL batch (gather across processes first).
    In float64: in float32 the mean of equal rewards can round, and the rounding error (~1e-8) divided by a
    std of the same size gives advantages of +-1 to a batch that has no signal."""
    _check_rewards(rewards)
    r = rewards.double()
    return _standardize(r, r, torch.finfo(rewards.dtype).eps).to(rewards.dtype)


def _standardize(r, ref, eps):
    """(r - mean(ref)) / (std(ref) + EPS), or zeros where ref's spread is rounding noise at resolution eps."""
    std = ref.std(unbiased=False)
    if std <= NOISE * eps * ref.abs().max():
        return torch.zeros_like(r)
    return (r - ref.mean()) / (std + EPS)


def group_relative(rewards, group_ids):
    """Normalise within each group (samples of one prompt); groups need at least 2 samples."""
    _check_rewards(rewards)
    group_ids = torch.as_tensor(group_ids)
    if group_ids.shape != rewards.shape:
        raise ValueError(f"group_ids must have the rewards' shape {tuple(rewards.shape)}, one id per sample; got "
                         f"{tuple(group_ids.shape)}")
    out = torch.empty_like(rewards)
    for g in group_ids.unique():
        members = group_ids == g
        if members.sum() < 2:
            raise ValueError(f"group {int(g)} has 1 sample; group-relative advantages need groups of >= 2 "
                             f"samples of the same prompt (set the task's group_size)")
        out[members] = normalize(rewards[members])
    return out


def clip(advantages, adv_clip):
    """Advantages clamped to [-adv_clip, adv_clip]."""
    if not (math.isfinite(adv_clip) and adv_clip > 0):
        raise ValueError(f"adv_clip must be > 0 and finite (DDPO uses 5, the paper's code 10); got {adv_clip}")
    return advantages.clamp(-adv_clip, adv_clip)


class PerPromptStatTracker:
    """DDPO's per-prompt normalisation: each prompt keeps its last `buffer_size` rewards; until it has
    `min_count` of them, the batch's statistics stand in for its own."""

    def __init__(self, buffer_size=16, min_count=16):
        self.buffer_size, self.min_count = buffer_size, min_count
        self.stats = defaultdict(lambda: deque(maxlen=buffer_size))

    def update(self, prompts, rewards):
        """Advantages (N,) float32 of `rewards` (N,) for `prompts` (N strings), after adding them to the history."""
        _check_rewards(rewards)
        if len(prompts) != len(rewards):
            raise ValueError(f"need one prompt per reward; got {len(prompts)} prompts for {len(rewards)} rewards")
        eps = torch.finfo(rewards.dtype).eps
        rewards = rewards.detach().cpu().double()
        out = torch.empty_like(rewards)
        for prompt in sorted(set(prompts)):
            members = torch.tensor([p == prompt for p in prompts])
            self.stats[prompt].extend(rewards[members].tolist())
            history = torch.tensor(list(self.stats[prompt]), dtype=torch.float64)
            ref = rewards if len(history) < self.min_count else history
            out[members] = _standardize(rewards[members], ref, eps)
        return out.float()

    def state_dict(self):
        return {"buffer_size": self.buffer_size, "min_count": self.min_count,
                "stats": {p: list(v) for p, v in self.stats.items()}}

    def load_state_dict(self, state):
        self.__init__(state["buffer_size"], state["min_count"])
        for prompt, values in state["stats"].items():
            self.stats[prompt].extend(values)


def _check_rewards(rewards):
    if not (isinstance(rewards, torch.Tensor) and rewards.ndim == 1 and rewards.is_floating_point()):
        what = f"{rewards.dtype} of shape {tuple(rewards.shape)}" if isinstance(rewards, torch.Tensor) else \
            type(rewards).__name__
        raise ValueError(f"rewards must be a 1-D floating point tensor (N,); got {what}")
    bad = ~torch.isfinite(rewards)
    if bool(bad.any()):
        raise ValueError(f"rewards must be finite; got {rewards[bad].tolist()} at positions "
                         f"{bad.nonzero().flatten().tolist()}")
