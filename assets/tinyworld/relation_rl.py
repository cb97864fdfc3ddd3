"""Does composition RL teach relation order? Each relation's success before and after the demo's composition
task, trained alone.

    .venv/bin/python assets/tinyworld/relation_rl.py MODEL [--epochs 20] [--lr 1e-4] [--flip 0.5]
        [--first-steps 3] [--samples 256] [--timestep-spacing trailing]  # 5 min for 20 iterations of 64 samples

The demo's RL settings (`minirl.demo.train_config`: 64 samples an iteration, PPO, full fine-tuning, half of the
trainable DDIM steps of each chain) with the L_pre step on the model's pretraining data: scenes mirrored
left-right with probability --flip, as `minirl pretrain --flip` made them (0 for the committed model).
--first-steps K trains only the K noisiest DDIM steps, every chain, where layouts are decided; --samples sets
the samples an iteration; --timestep-spacing overrides the model's (`tinyworld.load_policy`). Prints the
success per relation word on training and on held-out relation captions (`diagnose.relation_rates`).
"""

import argparse
from dataclasses import replace

from diagnose import relation_rates
from minirl import demo, judges, tinyworld
from minirl.trainer import Trainer


def report(stage, policy, detector):
    for split in ("train", "heldout"):
        rates = relation_rates(policy, detector, split)
        success = {r: v["success"] for r, v in rates.items()}
        print(f"{stage}, {split}: success {success}, mean {sum(success.values()) / len(success):.3f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--flip", type=float, default=0.0)
    parser.add_argument("--first-steps", type=int, default=0, help="0: the demo's random half of the steps")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--timestep-spacing", choices=tinyworld.TIMESTEP_SPACINGS)
    args = parser.parse_args()
    detector, preference = judges.load(demo.ASSETS / "judges")
    policy = tinyworld.load_policy(args.model, args.timestep_spacing, num_steps=10, guidance_scale=3.0)
    report("base", policy, detector)
    cfg = demo.DemoConfig(tasks=("composition",), epochs=args.epochs, lr=args.lr, out="runs/relation_rl")
    config = replace(demo.train_config(cfg), samples_per_epoch=args.samples)
    if args.first_steps:
        policy.trainable_steps = policy.trainable_steps[:args.first_steps]
        config = replace(config, timestep_fraction=1.0)
    policy.unet.requires_grad_(True)
    Trainer(policy, demo.make_tasks(cfg.tasks, detector, preference), config,
            pretrain_data=demo.pretrain_data(tinyworld.PretrainConfig(batch_size=32, flip=args.flip))).train()
    report(f"after {args.epochs} iterations", policy, detector)


if __name__ == "__main__":
    main()
