"""Small builders shared by the trainer tests: a tiny SD policy and a trainer on the JPEG reward."""

import torch

from minirl.rewards import jpeg_compressibility
from minirl.sd import add_lora, load_pipeline, policy_from_pipeline
from minirl.tasks import Task
from minirl.trainer import TrainConfig, Trainer

PROMPTS = ["cat", "dog", "horse", "monkey"]


def tiny_policy(folder, lora_rank=4, steps=6, guidance=5.0, scheduler=None, **kw):
    pipe = load_pipeline(folder)
    if scheduler is not None:
        pipe.scheduler = scheduler
    torch.manual_seed(0)
    if lora_rank:
        add_lora(pipe.unet, lora_rank)
    else:
        pipe.unet.requires_grad_(True)
    return policy_from_pipeline(pipe, num_steps=steps, guidance_scale=guidance, **kw)


def tiny_trainer(folder, out, reward=jpeg_compressibility, policy=None, accelerator=None, group_size=1, **config):
    config = {"epochs": 1, "samples_per_epoch": 4, "sample_batch_size": 4, "train_batch_size": 2,
              "image_every": 0, "out": str(out), **config}
    policy = policy or tiny_policy(folder)
    task = Task("jpeg", PROMPTS, reward, group_size=group_size)
    return Trainer(policy, [task], TrainConfig(**config), accelerator=accelerator)


def trainable(trainer):
    unet = trainer.acc.unwrap_model(trainer.policy.unet)
    return {n: p.detach().clone() for n, p in unet.named_parameters() if p.requires_grad}
