"""Rewards: one protocol for all of them.

A reward is a callable `reward(images, prompts, metadata) -> (rewards, info)`:
images (B, 3, H, W) float in [0, 1], prompts a list of B strings, metadata a list of B dicts; rewards a float
tensor of shape (B,), info a dict of extra per-batch numbers to log. A reward with `distribution = True`
scores a property of a whole minibatch (diversity, fairness: paper 3.2) and is called once per group of
samples of one prompt; every sample of the group gets that group's reward (or, with a leave-one-out
baseline, that reward minus the group's reward without it).
Every call is checked by `validate`, so a wrong shape, a NaN or a non-tensor is named at once.
"""

import io

import numpy as np
import torch
from PIL import Image


def validate(name, out, batch_size):
    """Check a reward's return value; return (rewards (B,) fp32, info)."""
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict)):
        raise TypeError(f"reward {name!r} must return (rewards, info) with rewards a tensor of shape "
                        f"({batch_size},) and info a dict; got {type(out).__name__}")
    rewards, info = out
    if not isinstance(rewards, torch.Tensor):
        raise TypeError(f"reward {name!r} returned rewards of type {type(rewards).__name__}; "
                        f"expected a float torch.Tensor of shape ({batch_size},)")
    if rewards.shape != (batch_size,):
        raise ValueError(f"reward {name!r} returned rewards of shape {tuple(rewards.shape)} for a batch of "
                         f"{batch_size} images; expected shape ({batch_size},)")
    if not rewards.is_floating_point():
        raise TypeError(f"reward {name!r} returned dtype {rewards.dtype}; expected a floating point tensor")
    bad = ~torch.isfinite(rewards)
    if bad.any():
        raise ValueError(f"reward {name!r} returned non-finite values {rewards[bad].tolist()} at batch "
                         f"positions {bad.nonzero().flatten().tolist()}")
    return rewards.detach().float(), info


def jpeg_size_kb(images, quality=95):
    """The size in kB of each image saved as a JPEG (DDPO's weight-free reward)."""
    pixels = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()
    sizes = []
    for array in pixels.numpy():
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="JPEG", quality=quality)
        sizes.append(buffer.tell() / 1000)
    return torch.tensor(sizes)


def jpeg_compressibility(images, prompts, metadata):
    """-(JPEG size in kB): smaller files, i.e. simpler, smoother images, score higher."""
    return -jpeg_size_kb(images), {}


def jpeg_incompressibility(images, prompts, metadata):
    """+(JPEG size in kB): busier, more detailed images score higher."""
    return jpeg_size_kb(images), {}


def blueness(images, prompts, metadata):
    """Blue minus red, averaged over each image's pixels, in [-1, 1] (the tiny world's first reward: notebooks
    3 and 4 turn its red shapes blue)."""
    return (images[:, 2] - images[:, 0]).mean((1, 2)), {}


def statistical_parity(labels, num_classes):
    """SP = sum_a (mean_x [h(x) = a] - 1/|A|)^2 over a minibatch's predicted attribute labels (paper Eq. 12):
    0 when every class is equally frequent, 1 - 1/|A| when all samples share one class."""
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"labels must be a non-empty 1-d tensor of class indices; got shape {tuple(labels.shape)}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must be class indices in [0, {num_classes}); got {labels.tolist()}")
    shares = torch.bincount(labels, minlength=num_classes).float() / len(labels)
    return ((shares - 1 / num_classes) ** 2).sum()


class ParityReward:
    """A distribution reward (paper 3.2): -SP of an attribute over each group of samples of one prompt.
    `classify(images) -> (B,) class indices` is the attribute classifier h (the paper's skin-tone classifier,
    the tiny world's colour classifier).

    credit="group" (the paper's): every sample of the group gets -SP(group). credit="leave_one_out": sample i
    gets -SP(group) + SP(group without i), the group's reward minus a baseline that does not depend on sample
    i. The samples are independent, so the baseline leaves the policy gradient's expectation unchanged and
    lowers its variance (to a third in tests/test_rewards.py's exact example): a sample of an over-represented
    colour is credited negatively at once, not through which of a few groups happened to be fairer.
    """

    distribution = True
    CREDITS = ("group", "leave_one_out")

    def __init__(self, classify, num_classes, credit="group"):
        if credit not in self.CREDITS:
            raise ValueError(f"credit must be one of {self.CREDITS}; got {credit!r}")
        self.classify, self.num_classes, self.credit = classify, num_classes, credit

    def __call__(self, images, prompts, metadata):
        labels = torch.as_tensor(self.classify(images)).cpu()
        sp = statistical_parity(labels, self.num_classes)
        rewards = torch.full((len(labels),), -float(sp))
        if self.credit == "leave_one_out":
            if len(labels) < 2:
                raise ValueError(f"leave-one-out credit needs groups of >= 2 samples; got {len(labels)}")
            others = ~torch.eye(len(labels), dtype=torch.bool)
            rewards += torch.stack([statistical_parity(labels[keep], self.num_classes) for keep in others])
        return rewards, {"statistical_parity": float(sp)}


REWARDS = {"jpeg_compressibility": jpeg_compressibility, "jpeg_incompressibility": jpeg_incompressibility}


def get_reward(name):
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; available: {sorted(REWARDS)}")
    return REWARDS[name]
