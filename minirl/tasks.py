"""A task is a reward with its own prompt distribution (paper 3.3): S = {(r_i, p_i(c))}.

Prompts are drawn per group of `group_size` samples, so that a distribution-based reward (paper 3.2) or
group-relative advantages see several samples of one prompt. A prompt distribution is a list of prompts
(drawn uniformly) or a function rng -> (prompt, metadata) for prompts that carry labels (the tiny world's
colours and shapes, for instance).
"""

import math
import random
from dataclasses import dataclass, field
from typing import Callable, Sequence, Union

import numpy as np

Prompts = Union[Sequence[str], Callable[[random.Random], tuple]]


@dataclass
class Task:
    name: str
    prompts: Prompts
    reward: Callable          # the reward protocol of minirl.rewards
    group_size: int = 1       # samples per prompt; a distribution reward scores each group as a whole
    advantages: str = None    # "batch", "per_prompt" or "group" for this task (None: the TrainConfig's)
    weight: float = 1.0       # multiplies this task's loss: under Adam, the size of its steps beside the others'
    metadata: dict = field(default_factory=dict)  # extra fields copied into every sample's metadata

    def __post_init__(self):
        if not callable(self.prompts) and len(self.prompts) == 0:
            raise ValueError(f"task {self.name!r} has an empty prompt list; give at least one prompt")
        if not callable(self.reward):
            raise TypeError(f"task {self.name!r}: reward must be callable (images, prompts, metadata) -> "
                            f"(rewards, info); got {type(self.reward).__name__}")
        if self.advantages not in (None, "batch", "per_prompt", "group"):
            raise ValueError(f"task {self.name!r}: advantages must be None, 'batch', 'per_prompt' or 'group'; "
                             f"got {self.advantages!r}")
        if not (isinstance(self.weight, (int, float)) and math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(f"task {self.name!r}: weight must be a finite number > 0; got {self.weight!r}")
        if self.group_size < 1:
            raise ValueError(f"task {self.name!r}: group_size must be >= 1; got {self.group_size}")

    @property
    def distribution(self):
        return getattr(self.reward, "distribution", False)

    def draw(self, seed, epoch, task_index, indices):
        """Prompts and metadata for the samples with these global indices: sample i belongs to group
        i // group_size, whose prompt depends only on (seed, epoch, task, group)."""
        prompts, metadata = [], []
        for i in indices:
            group = i // self.group_size
            rng = random.Random(seed_for(seed, epoch, task_index, group, "prompt"))
            if callable(self.prompts):
                prompt, meta = self.prompts(rng)
            else:
                prompt, meta = self.prompts[rng.randrange(len(self.prompts))], {}
            prompts.append(prompt)
            metadata.append({**self.metadata, **meta, "group": group})
        return prompts, metadata


def seed_for(*parts):
    """A 63-bit seed from any tuple of ints and strings (numpy's SeedSequence mixes them)."""
    words = [p if isinstance(p, int) else int.from_bytes(str(p).encode(), "little") % (2**63) for p in parts]
    return int(np.random.SeedSequence(words).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))
