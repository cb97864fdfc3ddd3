"""Rewards: one protocol for all of them, and `load(name)` for every reward the field uses.

A reward is a callable `reward(images, prompts, metadata) -> (rewards, info)`:
images (B, 3, H, W) float in [0, 1], prompts a list of B strings, metadata a list of B dicts; rewards a float
tensor of shape (B,), info a dict of extra per-batch numbers to log. A reward with `distribution = True`
scores a property of a whole minibatch (diversity, fairness: paper 3.2) and is called once per group of
samples of one prompt; every sample of the group gets that group's reward (or, with a leave-one-out
baseline, that reward minus the group's reward without it).
What a reward takes is checked by `check_images` (every reward here calls it: a non-tensor, a NaN pixel or
images in [-1, 1] are named at once), and what it returns by `validate` (the trainer calls it on every call: a
wrong shape, a NaN, an info that is not a dict of names to finite numbers).

    reward = load("imagereward")                      # the hub's THUDM/ImageReward (needs internet)
    reward = load("pickscore", "models/pickscore")    # a local folder with the hub repository's files
    rewards, info = reward(images, prompts, metadata)

The learned rewards are frozen nn.Modules that run batched on tensors, on CPU or GPU, in fp32 or bf16, and
are differentiable with respect to the images. `make_tiny_rewards(folder)` writes a tiny random twin of each,
in its hub repository's file layout, for tests and CPU runs.
"""

import importlib
import math
import numbers
from pathlib import Path

import torch

from minirl.rewards.images import check_images
from minirl.rewards.parity import ParityReward, statistical_parity
from minirl.rewards.pixels import blueness, jpeg_compressibility, jpeg_incompressibility, jpeg_size_kb

INFO = "info must be a dict of names (str) to finite numbers (floats, ints or one-element tensors)"


def validate(name, out, batch_size):
    """Check a reward's return value; return (rewards (B,) fp32, info)."""
    if not (isinstance(out, tuple) and len(out) == 2):
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
    validate_info(name, info)
    return rewards.detach().float(), info


def validate_info(name, info):
    """Check a reward's info: the trainer averages each value over batches and logs it."""
    if not isinstance(info, dict):
        raise TypeError(f"reward {name!r} returned info of type {type(info).__name__}; {INFO}")
    for key, value in info.items():
        if not isinstance(key, str):
            raise TypeError(f"reward {name!r} returned info key {key!r}, which is not a str; {INFO}")
        if isinstance(value, torch.Tensor) and value.numel() != 1:
            raise TypeError(f"reward {name!r} returned info[{key!r}], a tensor of shape {tuple(value.shape)}; {INFO}")
        if not isinstance(value, (numbers.Real, torch.Tensor)):
            raise TypeError(f"reward {name!r} returned info[{key!r}] = {value!r}; {INFO}")
        if not math.isfinite(float(value)):
            raise ValueError(f"reward {name!r} returned info[{key!r}] = {float(value)}; {INFO}")


FUNCTIONS = {"jpeg_compressibility": jpeg_compressibility, "jpeg_incompressibility": jpeg_incompressibility}
# each learned reward's module: HUB_ID, FILES, load(path_or_id, *, device, dtype, **options), make_tiny(folder)
MODELS = {"imagereward": "imagereward", "pickscore": "pickscore", "hpsv2": "hpsv2", "aesthetic": "aesthetic",
          "clipscore": "clipscore", "composition": "composition", "parity": "parity"}
NAMES = tuple(FUNCTIONS) + tuple(MODELS)


def load(name, path_or_id=None, *, device=None, dtype=None, **options):
    """The reward `name` (one of NAMES). Learned rewards load from `path_or_id`, a local folder or a hub id
    (default: the model's usual hub repository), onto `device` (default: a GPU if there is one) in `dtype`
    (default fp32; "bf16" where the device runs it); `options` are the model's own (parity's classes, ...)."""
    if name in FUNCTIONS:
        if path_or_id is not None or options:
            raise ValueError(f"reward {name!r} has no weights and no options; got path_or_id={path_or_id!r}, "
                             f"options={sorted(options)}")
        return FUNCTIONS[name]
    module = model_module(name)
    from minirl.rewards.loading import device_and_dtype
    device, dtype = device_and_dtype(device, dtype)
    return module.load(path_or_id or module.HUB_ID, device=device, dtype=dtype, **options)


def model_module(name):
    """The module of a learned reward, by name."""
    if name not in MODELS:
        raise ValueError(f"unknown reward {name!r}; available: {', '.join(NAMES)}")
    return importlib.import_module(f"minirl.rewards.{MODELS[name]}")


def make_tiny_rewards(folder, names=tuple(MODELS), seed=0):
    """Write a tiny random twin of each learned reward to folder/<name>/, in the file layout of its hub
    repository, so that `load(name, folder/name)` and the official loading code both read it. Returns the
    folders by name."""
    return {name: Path(model_module(name).make_tiny(Path(folder) / name, seed=seed)) for name in names}
