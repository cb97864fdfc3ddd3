"""Does composition RL teach relation order, or colour binding? Each relation's success before and after the
demo's composition task, trained alone.

    .venv/bin/python -m minirl.tinyworld.relation_rl MODEL [--epochs 20] [--lr 1e-4] [--flip 0.5]
        [--first-steps 3] [--samples 256] [--timestep-spacing trailing] [--split heldout]
        [--reward objects|coin] [--pretrain-beta 0]  # 5 min for 20 iterations of 64 samples

The demo's RL settings (`minirl.tinyworld.demo.train_config`: 64 samples an iteration, PPO, full fine-tuning, half of the
trainable DDIM steps of each chain) with the L_pre step on the model's pretraining data: scenes mirrored
left-right with probability --flip, as `minirl pretrain --flip` made them (0 for the committed model).
--first-steps K trains only the K noisiest DDIM steps, every chain, where layouts are decided; --samples sets
the samples an iteration; --timestep-spacing overrides the model's (`diffusion.load_policy`); --split trains on
the held-out relation captions instead (what RL can do for a prompt it trains on); --reward objects credits
the named objects wherever they are (the detector's hard verdict), not the relation; --reward coin is the
control, 0 or 1 at random whatever the image (what the updates do with no signal); --pretrain-beta weighs
the L_pre step (0: off). Prints the success per relation word and the mean share of images with the named
objects, on training and on held-out relation captions (`diagnose.relation_rates`).
"""

import argparse
from dataclasses import replace

import torch

from minirl.tinyworld import demo, diffusion, judges, scenes
from minirl.tinyworld.diagnose import relation_rates
from minirl.trainer import Trainer


class ObjectsReward:
    """1 where the detector finds exactly the named objects, wherever they are; else 0."""

    def __init__(self, detector):
        self.detector = detector

    def __call__(self, images, prompts, metadata):
        _, success, objects = judges.verdicts(self.detector, images, prompts)
        return objects.float(), {"success": success.float().mean().item(), "objects": objects.float().mean().item()}


class CoinReward:
    """The control: 0 or 1 at random, whatever the image."""

    def __init__(self, seed=0):
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, images, prompts, metadata):
        return torch.randint(0, 2, (len(images),), generator=self.generator).float(), {}


def report(stage, policy, detector):
    for split in ("train", "heldout"):
        rates = relation_rates(policy, detector, split)
        success = {r: v["success"] for r, v in rates.items()}
        objects = sum(v["objects"] for v in rates.values()) / len(rates)
        print(f"{stage}, {split}: success {success}, mean {sum(success.values()) / len(success):.3f}, "
              f"named objects {objects:.3f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--flip", type=float, default=0.0)
    parser.add_argument("--first-steps", type=int, default=0, help="0: the demo's random half of the steps")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--timestep-spacing", choices=diffusion.TIMESTEP_SPACINGS)
    parser.add_argument("--split", choices=scenes.SPLITS, default="train", help="the relation captions RL trains on")
    parser.add_argument("--reward", choices=("composition", "objects", "coin"), default="composition")
    parser.add_argument("--pretrain-beta", type=float, default=1.0)
    args = parser.parse_args()
    detector, preference = judges.load(demo.ASSETS / "judges")
    policy = diffusion.load_policy(args.model, args.timestep_spacing, num_steps=10, guidance_scale=3.0)
    report("base", policy, detector)
    cfg = demo.DemoConfig(tasks=("composition",), epochs=args.epochs, lr=args.lr, pretrain_beta=args.pretrain_beta,
                          out="runs/relation_rl")
    config = replace(demo.train_config(cfg), samples_per_epoch=args.samples)
    if args.first_steps:
        policy.trainable_steps = policy.trainable_steps[:args.first_steps]
        config = replace(config, timestep_fraction=1.0)
    task = replace(demo.make_tasks(cfg.tasks, detector, preference)[0],
                   prompts=scenes.prompt_sampler("relation", args.split))
    if args.reward != "composition":
        task = replace(task, reward=ObjectsReward(detector) if args.reward == "objects" else CoinReward())
    policy.unet.requires_grad_(True)
    Trainer(policy, [task], config,
            pretrain_data=demo.pretrain_data(diffusion.PretrainConfig(batch_size=32, flip=args.flip))).train()
    report(f"after {args.epochs} iterations", policy, detector)


if __name__ == "__main__":
    main()
