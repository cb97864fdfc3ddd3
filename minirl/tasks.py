"""A task is a reward with its own prompt distribution (paper 3.3): S = {(r_i, p_i(c))}.

Prompts are drawn per group of `group_size` samples, so that a distribution-based reward (paper 3.2) or
group-relative advantages see several samples of one prompt. A prompt distribution is a list of prompts
(drawn uniformly) or a function rng -> (prompt, metadata) for prompts that carry labels (the tiny world's
colours and shapes, for instance).
"""

import math
import random
import textwrap
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
        if isinstance(self.prompts, str):
            raise TypeError(f"task {self.name!r}: prompts must be a list of prompts or a function rng -> (prompt, "
                            f"metadata); got the str {self.prompts!r}, which would be drawn one character at a time; "
                            f"pass [{self.prompts!r}]")
        if not callable(self.prompts):
            if len(self.prompts) == 0:
                raise ValueError(f"task {self.name!r} has an empty prompt list; give at least one prompt")
            bad = next((i for i, p in enumerate(self.prompts) if not isinstance(p, str)), None)
            if bad is not None:
                raise TypeError(f"task {self.name!r}: prompt #{bad} is {self.prompts[bad]!r}; every prompt must be "
                                f"a str")
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

    @property
    def one_value_a_group(self):
        """Whether the reward gives every sample of a group one value: a distribution reward does, unless it
        credits each sample its own (ParityReward's credit="leave_one_out")."""
        return self.distribution and getattr(self.reward, "credit", "group") == "group"

    def check_advantages(self, mode, samples_per_epoch):
        """Refuse settings under which this task's advantages (`mode`: "batch", "per_prompt" or "group") would
        be 0 whatever the rewards, because they standardise rewards that cannot differ."""
        if mode == "group":
            if self.group_size < 2:
                raise ValueError(f"advantages='group' needs tasks with group_size >= 2; task {self.name!r} has "
                                 f"{self.group_size}")
            if self.one_value_a_group:
                raise ValueError(f"task {self.name!r}: its distribution reward gives every sample of a group one "
                                 f"value, so advantages='group' (within each group) would be 0; use 'batch' or "
                                 f"'per_prompt' (across groups), or a reward that credits each sample its own "
                                 f"(ParityReward(credit='leave_one_out'))")
            return
        per_value = self.group_size if self.one_value_a_group else 1  # samples that share one reward value
        if samples_per_epoch < 2 * per_value:
            what = f"one group of {per_value}, which its distribution reward scores with one value" \
                if per_value > 1 else "one sample"
            over = "the epoch's rewards" if mode == "batch" else \
                "the epoch's rewards until a prompt has a history of its own"
            raise ValueError(f"task {self.name!r}: samples_per_epoch={samples_per_epoch} is {what}, and "
                             f"advantages={mode!r} standardise {over}, so every advantage would be 0; valid: "
                             f"samples_per_epoch >= {2 * per_value}")

    def check_prompt_lengths(self, tokenizer):
        """Refuse prompts longer than the text encoder reads (tokenizer.model_max_length tokens, CLIP's 77): it
        would cut off their end, which the policy would never see while the reward reads the prompt whole. A
        policy without a tokenizer (one that is never sampled: the batch arithmetic's) reads no prompt."""
        if callable(self.prompts) or tokenizer is None:
            return
        prompts = list(dict.fromkeys(self.prompts))
        lengths = [len(ids) for ids in tokenizer(prompts, verbose=False).input_ids]
        long = [(p, n) for p, n in zip(prompts, lengths) if n > tokenizer.model_max_length]
        if long:
            prompt, n = long[0]
            raise ValueError(f"task {self.name!r}: {len(long)} of {len(prompts)} prompts are longer than the text "
                             f"encoder reads ({tokenizer.model_max_length} tokens, start and end included), e.g. "
                             f"{textwrap.shorten(prompt, 60, placeholder=' ...')!r} ({n} tokens); shorten them")

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
