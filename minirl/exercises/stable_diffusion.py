"""Checkers for notebook 08 (the trainer on Stable Diffusion): the LoRA parameter count and the batch arithmetic.

Both compare against minirl itself: the parameters `minirl.sd.add_lora` makes trainable, and the UNet passes
that `Trainer.summary()` reports for an epoch.
"""

import re
import tempfile

import torch

from minirl.exercises import check

# stable-diffusion-v1-5's unet/config.json, where it differs from UNet2DConditionModel's defaults
SD15_UNET = {"sample_size": 64, "cross_attention_dim": 768, "attention_head_dim": 8,
             "block_out_channels": (320, 640, 1280, 1280)}


def tiny_unet(cross_attention_dim=32, block_out_channels=(32, 64), layers_per_block=1, empty=False):
    """A tiny random UNet2DConditionModel of the tiny SD pipeline's shape; empty: on the meta device (no memory)."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    from minirl.sd import TINY_UNET
    with init_empty_weights() if empty else torch.device("cpu"):
        return UNet2DConditionModel(**{**TINY_UNET, "block_out_channels": block_out_channels,
                                       "cross_attention_dim": cross_attention_dim},
                                    layers_per_block=layers_per_block, sample_size=8)


def lora_parameters(unet, rank):
    """Reference: how many parameters `minirl.sd.add_lora(unet, rank)` makes trainable (on a fresh empty copy
    of the UNet built from its config, so the UNet given is never changed)."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    from minirl.sd import add_lora
    with init_empty_weights():
        fresh = UNet2DConditionModel.from_config(unet.config)
    add_lora(fresh, rank)
    return sum(p.numel() for p in fresh.parameters() if p.requires_grad)


def check_lora_parameters(student_fn):
    """student_fn(unet, rank) -> the number of LoRA parameters on the attention projections of `unet`."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel
    with init_empty_weights():
        sd15 = UNet2DConditionModel(**SD15_UNET)
    cases = [(tiny_unet(empty=True), 1), (tiny_unet(empty=True), 4),
             (tiny_unet(cross_attention_dim=48, layers_per_block=2, empty=True), 8), (sd15, 4)]
    return check("lora_parameters", student_fn, lora_parameters, cases, atol=0, rtol=0, descriptions=[
        "the tiny UNet (blocks of width 32 and 64, text of width 32), rank 1", "the tiny UNet, rank 4",
        "a text encoder of width 48, which cross-attention's to_k and to_v read, and 2 layers a block; rank 8",
        "Stable Diffusion 1.5's UNet, rank 4"])


def unet_passes_per_epoch(config, num_steps, num_trainable, guidance_scale):
    """Reference: (sampling passes, sampling UNet batch, training passes, largest training UNet batch) of one
    task's epoch on one process, read from `Trainer.summary()` of a trainer built with this config over a
    tiny UNet and Stable Diffusion's DDIM schedule (num_steps steps, eta 1, default min_sigma)."""
    from accelerate import Accelerator

    from minirl.policy import DiffusionPolicy
    from minirl.rewards import jpeg_compressibility
    from minirl.sd import sd_scheduler
    from minirl.tasks import Task
    from minirl.trainer import Trainer
    policy = DiffusionPolicy(_unet(), sd_scheduler(), None, None, num_steps=num_steps,
                             guidance_scale=guidance_scale)
    if len(policy.trainable_steps) != num_trainable:
        raise ValueError(f"case: {num_steps} steps have {len(policy.trainable_steps)} trainable steps, "
                         f"not {num_trainable}")
    summary = Trainer(policy, [Task("t", ["a cat"], jpeg_compressibility)], config,
                      accelerator=Accelerator()).summary()
    sampling = re.search(r"(\d+) UNet passes at batch (\d+) per process", summary)
    steps = re.search(r"(\d+) optimizer steps a task and epoch", summary)
    training = re.search(r"in (\d+) UNet passes at batch (\d+)", summary)
    return (int(sampling[1]), int(sampling[2]), int(steps[1]) * int(training[1]), int(training[2]))


def check_unet_passes_per_epoch(student_fn):
    """student_fn(config, num_steps, num_trainable, guidance_scale) -> (sampling passes, sampling UNet batch,
    training passes, largest training UNet batch) of one epoch, one process."""
    from minirl.trainer import TrainConfig
    out = tempfile.mkdtemp(prefix="minirl-check-")  # never written: no trainer of the checker trains
    cases = [
        (TrainConfig(samples_per_epoch=16, sample_batch_size=8, train_batch_size=4, out=out), 20, 18, 5.0),
        (TrainConfig(samples_per_epoch=32, sample_batch_size=8, train_batch_size=8, train_micro_batch=4,
                     timestep_fraction=0.1, out=out), 50, 48, 5.0),
        (TrainConfig(samples_per_epoch=12, sample_batch_size=4, train_batch_size=6, timestep_fraction=0.25,
                     inner_epochs=2, out=out), 20, 18, 1.0),
        (TrainConfig(samples_per_epoch=8, sample_batch_size=8, train_batch_size=2, timestep_fraction=0.01,
                     out=out), 10, 8, 7.5),
        (TrainConfig(samples_per_epoch=16, sample_batch_size=16, train_batch_size=4, train_micro_batch=6,
                     timestep_fraction=0.5, out=out), 20, 18, 3.0),
    ]
    return check("unet_passes_per_epoch", student_fn, unet_passes_per_epoch, cases, atol=0, rtol=0, descriptions=[
        "the notebook's CPU run: 20 steps, guidance 5, all 18 trainable steps trained",
        "DDPO on one GPU: 50 steps, timestep_fraction 0.1 (4 of 48 steps), train_micro_batch 4",
        "guidance 1 (off: the UNet batch does not double), 2 inner epochs, timestep_fraction 0.25",
        "timestep_fraction 0.01: still at least one step a chain",
        "train_micro_batch 6, larger than the train batch of 4: a UNet call holds several samples' transitions"])


_UNET = []


def _unet():
    """One tiny fully trainable UNet, shared by the reference trainers (they never run it)."""
    if not _UNET:
        _UNET.append(tiny_unet().requires_grad_(True))
    return _UNET[0]
