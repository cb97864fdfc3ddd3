"""Notebook 08's coding exercises, answered (for teachers): the LoRA parameters of a UNet and the batch
arithmetic of an epoch. Written from the notebook's sections 2-4, not from minirl.sd or Trainer.summary()."""

import math

import torch

from minirl.sd import LORA_TARGETS


def lora_parameters(unet, rank):
    """A (rank x d_in) and B (d_out x rank) for every targeted torch.nn.Linear of `unet`."""
    return sum(rank * (m.in_features + m.out_features) for name, m in unet.named_modules()
               if isinstance(m, torch.nn.Linear) and name.endswith(tuple(LORA_TARGETS)))


def unet_passes_per_epoch(config, num_steps, num_trainable, guidance_scale):
    """(sampling passes, sampling UNet batch, training passes, largest training UNet batch) of one task's epoch
    on one process."""
    copies = 2 if guidance_scale > 1 else 1                         # guidance: unconditional + conditional copy
    n_train = max(1, int(num_trainable * config.timestep_fraction))  # trained timesteps a chain
    micro = config.train_micro_batch or config.train_batch_size     # transitions a UNet call
    optimizer_steps = config.inner_epochs * config.samples_per_epoch // config.train_batch_size
    passes_a_step = math.ceil(config.train_batch_size * n_train / micro)
    return (num_steps * config.samples_per_epoch // config.sample_batch_size, copies * config.sample_batch_size,
            optimizer_steps * passes_a_step, copies * micro)
