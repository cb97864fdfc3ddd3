"""TRL 0.23.1 DDPO on a local Stable Diffusion folder: per-epoch wall time and the process's peak memory.

Runs `trl.DDPOTrainer` (LoRA, JPEG-compressibility reward) one epoch at a time via `trainer.step` and prints
one JSON line per epoch, {"tool": "trl", "epoch", "epoch_seconds", "reward_mean"}, then
{"tool": "trl", "peak_rss_mb"} (ru_maxrss of this process, so it includes loading the pipeline).
An epoch = sampling (samples_per_epoch images, UNet batch 2 x sample_batch_size because of CFG), the reward,
and training (UNet batch 2 x train_batch_size with train_cfg=True; one optimizer step per train batch, the
gradient accumulated over its num_steps * timestep_fraction timesteps).

Settings map to DDPOConfig as: --steps sample_num_steps, --eta sample_eta, --guidance sample_guidance_scale,
--sample-batch-size sample_batch_size, --samples-per-epoch / --sample-batch-size sample_num_batches_per_epoch,
--train-batch-size train_batch_size, --lr train_learning_rate, --adv-clip train_adv_clip_max, --clip-range
train_clip_range, --timestep-fraction train_timestep_fraction, --inner-epochs train_num_inner_epochs, --seed
seed; fixed: train_cfg=True, mixed_precision="no" (fp16 fails on CPU), per_prompt_stat_tracking=False,
log_with=None, no checkpoints, no 8-bit Adam. LoRA is TRL's own: r=4, alpha=4, gaussian init, on
to_q/to_k/to_v/to_out.0 (hard-coded in DefaultDDPOStableDiffusionPipeline, so --lora-rank must be 4).
Run with the TRL venv (minirl is not installed there, hence its own JPEG reward):
    bench/.venv-trl/bin/python bench/trl_ddpo.py --pipeline runs/tiny-sd
"""

import argparse
import io
import json
import os
import random
import resource
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub: the pipeline is a local folder

import numpy as np
import torch
from accelerate import PartialState
from PIL import Image
from trl import DDPOConfig, DDPOTrainer, DefaultDDPOStableDiffusionPipeline


def jpeg_compressibility(images, prompts, metadata):
    """-(size in kB of each image saved as JPEG quality 95), from the uint8 image, as in DDPO."""
    pixels = (images.detach().float() * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()
    sizes = []
    for array in pixels.numpy():
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="JPEG", quality=95)
        sizes.append(buffer.tell() / 1000)
    return -torch.tensor(sizes), {}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pipeline", required=True, help="local Stable Diffusion pipeline folder")
    p.add_argument("--prompts", default="cat,dog,horse,monkey")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--samples-per-epoch", type=int, default=16)
    p.add_argument("--sample-batch-size", type=int, default=8)
    p.add_argument("--train-batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--eta", type=float, default=1.0)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--lora-rank", type=int, default=4)
    p.add_argument("--timestep-fraction", type=float, default=1.0)
    p.add_argument("--inner-epochs", type=int, default=1)
    p.add_argument("--clip-range", type=float, default=1e-4)
    p.add_argument("--adv-clip", type=float, default=5.0)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    args = p.parse_args()

    if not os.path.isdir(args.pipeline):
        p.error(f"--pipeline {args.pipeline!r} is not a folder")
    if args.lora_rank != 4:
        p.error("TRL's DefaultDDPOStableDiffusionPipeline hard-codes LoRA r=4; --lora-rank must be 4")
    if args.samples_per_epoch % args.sample_batch_size:
        p.error("--samples-per-epoch must be a multiple of --sample-batch-size")
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # "DDPOTrainer is deprecated"

    prompts = args.prompts.split(",")
    config = DDPOConfig(
        sample_num_steps=args.steps, sample_eta=args.eta, sample_guidance_scale=args.guidance,
        sample_batch_size=args.sample_batch_size,
        sample_num_batches_per_epoch=args.samples_per_epoch // args.sample_batch_size,
        train_batch_size=args.train_batch_size, train_learning_rate=args.lr, train_adv_clip_max=args.adv_clip,
        train_clip_range=args.clip_range, train_timestep_fraction=args.timestep_fraction,
        train_num_inner_epochs=args.inner_epochs, train_cfg=True, mixed_precision="no",
        per_prompt_stat_tracking=False, log_with=None, save_freq=10**9, train_use_8bit_adam=False,
        seed=args.seed, num_epochs=args.epochs)

    rewards = []  # the epoch's rewards, collected as TRL computes them (it logs them only to a tracker)

    def reward_fn(images, prompts_, metadata):
        r, info = jpeg_compressibility(images, prompts_, metadata)
        rewards.append(r)
        return r, info

    rng = random.Random(args.seed)
    PartialState()  # TRL logs through accelerate's logger before it creates its Accelerator; that logger raises otherwise
    pipeline = DefaultDDPOStableDiffusionPipeline(args.pipeline, use_lora=True)
    trainer = DDPOTrainer(config, reward_fn, lambda: (rng.choice(prompts), {}), pipeline)
    lora = [m for n, m in pipeline.unet.named_modules() if n.endswith("lora_A.default")]
    assert lora and all(m.out_features == 4 for m in lora), "expected TRL's LoRA rank 4"
    pipeline.set_progress_bar_config(disable=True)

    global_step = 0
    for epoch in range(args.epochs):
        rewards.clear()
        start = time.perf_counter()
        global_step = trainer.step(epoch, global_step)
        seconds = time.perf_counter() - start
        print(json.dumps({"tool": "trl", "epoch": epoch, "epoch_seconds": round(seconds, 3),
                          "reward_mean": round(torch.cat(rewards).mean().item(), 4),
                          "global_step": global_step}), flush=True)
    print(json.dumps({"tool": "trl", "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                                          / 1024, 1)}), flush=True)


if __name__ == "__main__":
    main()
