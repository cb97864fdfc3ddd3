"""Does composition RL teach relation order, or colour binding? Composition success before and after the demo's
composition task, trained alone, on a DDIM or a flow-matching base.

    .venv/bin/python -m minirl.tinyworld.relation_rl MODEL [--epochs 20] [--lr 1e-4] [--seed 0] [--flip 0.5]
        [--first-steps 3] [--samples 256] [--timestep-spacing trailing] [--split heldout]
        [--reward objects|coin] [--pretrain-beta 0] [--noise-level 0.7] [--sde-window 0,3]
        [--shared-noise] [--group-size 8] [--eval-samples 4] [--per-relation] [--out DIR] [--json FILE]
        # 5 min for 20 iterations of 64 samples

The demo's RL settings (`minirl.tinyworld.demo.train_config`: 64 samples an iteration, PPO, full fine-tuning)
on half of the trainable steps of each chain, in groups of --group-size samples of one prompt, with the L_pre
step on the model's pretraining data: scenes mirrored left-right with probability --flip, as `minirl pretrain
--flip` made them (0 for the committed model).
--first-steps K trains only the K noisiest steps, every chain, where layouts are decided; --samples sets
the samples an iteration; --timestep-spacing overrides a DDIM model's (`diffusion.load_policy`); --split trains on
the held-out relation captions instead (what RL can do for a prompt it trains on); --reward objects credits
the named objects wherever they are (the detector's hard verdict), not the relation; --reward coin is the
control, 0 or 1 at random whatever the image (what the updates do with no signal); --pretrain-beta weighs
the L_pre step (0: off). A flow model (`minirl pretrain --objective flow`) samples with Flow-GRPO's SDE at
--noise-level; --sde-window START,STOP puts that noise on steps START..STOP-1 only, the ODE elsewhere
(MixGRPO's window), and trains every step of the window. --shared-noise starts every chain of a group from
one x_T (DanceGRPO), so that what tells a group's samples apart is the sampler's noise, the policy's actions.
Prints composition success on the demo's evaluation prompts (training relations, held-out relations, single
objects; --eval-samples seeds a prompt) before and after, sampled as the policy samples; --per-relation also
each relation word's success and the share of images with the named objects (`diagnose.relation_rates`);
--json writes them.
"""

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

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


SETS = ("relation_train", "relation_heldout", "single")


def report(stage, policy, detector, per_relation=False, samples=4):
    """Composition success on the demo's evaluation sets, `samples` seeds a prompt: {set: success} (and
    {split: rates} per relation)."""
    reward = judges.CompositionReward(detector)
    sets = demo.eval_prompts(samples)
    result = {name: reward(demo.generate(policy, sets[name]), [p for p, _ in sets[name]],
                           [{}] * len(sets[name]))[1]["success"] for name in SETS}
    print(f"{stage}: composition success " + ", ".join(f"{k} {v:.3f}" for k, v in result.items()), flush=True)
    if per_relation:
        for split in ("train", "heldout"):
            rates = relation_rates(policy, detector, split)
            success = {r: v["success"] for r, v in rates.items()}
            objects = sum(v["objects"] for v in rates.values()) / len(rates)
            result[f"per_relation_{split}"] = rates
            print(f"{stage}, {split}: success {success}, mean {sum(success.values()) / len(success):.3f}, "
                  f"named objects {objects:.3f}", flush=True)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minirl.tinyworld.relation_rl", description=__doc__.split("\n")[0])
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
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise-level", type=float, default=0.7, help="a flow model's SDE noise (Flow-GRPO: 0.7)")
    parser.add_argument("--sde-window", help="START,STOP: a flow model's SDE on these steps only, the ODE elsewhere")
    parser.add_argument("--shared-noise", action="store_true", help="one x_T a group (DanceGRPO)")
    parser.add_argument("--group-size", type=int, default=8, help="samples a prompt (group-relative advantages)")
    parser.add_argument("--eval-samples", type=int, default=4, help="seeds a prompt in the evaluation")
    parser.add_argument("--per-relation", action="store_true", help="also each relation word's success (slower)")
    parser.add_argument("--out", default="runs/relation_rl", help="the run folder (metrics, checkpoint)")
    parser.add_argument("--json", help="write the arguments, the successes before and after and the seconds here")
    args = parser.parse_args(argv)
    window = None if args.sde_window is None else tuple(int(i) for i in args.sde_window.split(","))
    detector, preference = judges.load(demo.ASSETS / "judges")
    policy = diffusion.load_policy(args.model, args.timestep_spacing, num_steps=10, guidance_scale=3.0,
                                   noise_level=args.noise_level, sde_window=window)
    base = report("base", policy, detector, args.per_relation, args.eval_samples)
    cfg = demo.DemoConfig(tasks=("composition",), epochs=args.epochs, lr=args.lr, pretrain_beta=args.pretrain_beta,
                          seed=args.seed, out=args.out)
    config = replace(demo.train_config(cfg), samples_per_epoch=args.samples, timestep_fraction=0.5,
                     shared_noise=args.shared_noise)
    if args.first_steps:
        policy.trainable_steps = policy.trainable_steps[:args.first_steps]
    if args.first_steps or window:
        config = replace(config, timestep_fraction=1.0)
    task = replace(demo.make_tasks(cfg.tasks, detector, preference)[0],
                   prompts=scenes.prompt_sampler("relation", args.split), group_size=args.group_size)
    if args.reward != "composition":
        task = replace(task, reward=ObjectsReward(detector) if args.reward == "objects" else CoinReward(args.seed))
    policy.unet.requires_grad_(True)
    start = time.perf_counter()
    Trainer(policy, [task], config,
            pretrain_data=demo.pretrain_data(diffusion.PretrainConfig(batch_size=32, flip=args.flip))).train()
    train_seconds = time.perf_counter() - start
    tuned = report(f"after {args.epochs} iterations", policy, detector, args.per_relation,
                   args.eval_samples)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"args": vars(args), "base": base, "tuned": tuned,
                                               "seconds_to_train": train_seconds}, indent=1))


if __name__ == "__main__":
    main()
