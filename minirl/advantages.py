"""Advantages from rewards: A = (r - mean) / (std + 1e-8) (paper Eq. 10), std the population std (ddof 0)
as in DDPO and TRL, with the statistics taken over

- the whole batch, across all processes ("batch", the paper's choice: it scales to millions of prompts);
- each prompt's recent rewards ("per_prompt", DDPO's tracker: a buffer of 16, batch stats until it fills);
- each group of samples of the same prompt in this batch ("group", group-relative as in GRPO / Flow-GRPO);

and clipped to [-adv_clip, adv_clip] (DDPO 5, the paper's code 10).
"""

from collections import defaultdict, deque

import torch

EPS = 1e-8


def normalize(rewards):
    """Per-batch advantages. `rewards` (N,) must be the GLOBAL batch (gather across processes first).
    In float64: in float32 the mean of equal rewards can round, and the rounding error (~1e-8) divided by a
    std of the same size gives advantages of +-1 to a batch that has no signal."""
    r = rewards.double()
    return ((r - r.mean()) / (r.std(unbiased=False) + EPS)).to(rewards.dtype)


def group_relative(rewards, group_ids):
    """Normalise within each group (samples of one prompt); groups need at least 2 samples."""
    group_ids = torch.as_tensor(group_ids)
    out = torch.empty_like(rewards)
    for g in group_ids.unique():
        members = group_ids == g
        if members.sum() < 2:
            raise ValueError(f"group {int(g)} has 1 sample; group-relative advantages need groups of >= 2 "
                             f"samples of the same prompt (set the task's group_size)")
        out[members] = normalize(rewards[members])
    return out


def clip(advantages, adv_clip):
    if not adv_clip > 0:
        raise ValueError(f"adv_clip must be > 0; got {adv_clip}")
    return advantages.clamp(-adv_clip, adv_clip)


class PerPromptStatTracker:
    """DDPO's per-prompt normalisation: each prompt keeps its last `buffer_size` rewards; until it has
    `min_count` of them, the batch's statistics stand in for its own."""

    def __init__(self, buffer_size=16, min_count=16):
        self.buffer_size, self.min_count = buffer_size, min_count
        self.stats = defaultdict(lambda: deque(maxlen=buffer_size))

    def update(self, prompts, rewards):
        rewards = rewards.detach().cpu().double()
        out = torch.empty_like(rewards)
        for prompt in sorted(set(prompts)):
            members = torch.tensor([p == prompt for p in prompts])
            self.stats[prompt].extend(rewards[members].tolist())
            history = torch.tensor(list(self.stats[prompt]), dtype=torch.float64)
            ref = rewards if len(history) < self.min_count else history
            out[members] = (rewards[members] - ref.mean()) / (ref.std(unbiased=False) + EPS)
        return out.float()

    def state_dict(self):
        return {"buffer_size": self.buffer_size, "min_count": self.min_count,
                "stats": {p: list(v) for p, v in self.stats.items()}}

    def load_state_dict(self, state):
        self.__init__(state["buffer_size"], state["min_count"])
        for prompt, values in state["stats"].items():
            self.stats[prompt].extend(values)
