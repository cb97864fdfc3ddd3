"""Run by test_multiprocess under torchrun: one epoch; saves the all-reduced gradient of the first optimizer step
and the final trainable weights. argv: pipeline folder, out folder, advantages mode, timestep fraction, and
"bad_reward_on_rank1" to make the last process's reward return NaN."""

import json
import sys

import torch
from accelerate import Accelerator
from safetensors.torch import save_file

from helpers import tiny_policy, tiny_trainer, trainable
from minirl.rewards import jpeg_compressibility

folder, out, mode, fraction = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
acc = Accelerator(cpu=True)
per_process = 8 // acc.num_processes


def reward(images, prompts, metadata):
    rewards, info = jpeg_compressibility(images, prompts, metadata)
    if "bad_reward_on_rank1" in sys.argv and acc.process_index == acc.num_processes - 1:
        rewards[0] = float("nan")
    return rewards, info


policy = tiny_policy(folder)
generator = torch.Generator().manual_seed(1)
for name, p in policy.unet.named_parameters():
    if "lora_B" in name:  # away from zero, so that every adapter weight has a gradient
        p.data = 0.01 * torch.randn(p.shape, generator=generator)
trainer = tiny_trainer(folder, out, reward=reward, policy=policy, accelerator=acc, samples_per_epoch=8,
                       sample_batch_size=per_process, train_batch_size=per_process, lr=1e-3, advantages=mode,
                       group_size=2, timestep_fraction=fraction, max_grad_norm=1e9)
first_grads = {}
step = trainer.optimizer.step


def record_then_step(*args, **kwargs):
    if not first_grads:
        unet = trainer.acc.unwrap_model(trainer.policy.unet)
        first_grads.update({n: p.grad.detach().clone() for n, p in unet.named_parameters() if p.requires_grad})
    return step(*args, **kwargs)


trainer.optimizer.step = record_then_step
trainer.train()
if acc.is_main_process:
    save_file({n: v.contiguous() for n, v in trainable(trainer).items()}, f"{out}/final.safetensors")
    save_file({n: v.contiguous() for n, v in first_grads.items()}, f"{out}/grads.safetensors")
    json.dump({"num_processes": acc.num_processes}, open(f"{out}/ok.json", "w"))
