"""Does composition RL teach relation order? Each relation's success before and after the demo's composition
task, trained alone.

    .venv/bin/python assets/tinyworld/relation_rl.py MODEL [EPOCHS] [LR] [FLIP]  # 5 min for 20 on 2 CPU cores

The demo's RL settings (`minirl.demo.train_config`: 64 samples an iteration, PPO, full fine-tuning) with the
L_pre step on the model's pretraining data: scenes mirrored left-right with probability FLIP, as
`minirl pretrain --flip` made them (0 for the committed model). Success and "the named objects, any places"
per relation word, on training and on held-out relation captions (`diagnose.relation_rates`).
"""

import random
import sys

import torch

from diagnose import relation_rates
from minirl import demo, judges, tinyworld
from minirl.trainer import Trainer


def report(stage, policy, detector):
    for split in ("train", "heldout"):
        rates = relation_rates(policy, detector, split)
        success = {r: round(v["objects"] * v["relation_given_objects"], 3) for r, v in rates.items()}
        print(f"{stage}, {split}: success {success}, mean {sum(success.values()) / len(success):.3f}", flush=True)


def main(model, epochs=20, lr=1e-4, flip=0.0):
    detector, preference = judges.load(demo.ASSETS / "judges")
    policy = tinyworld.load_policy(model, num_steps=10, guidance_scale=3.0)
    report("base", policy, detector)
    recipe = tinyworld.PretrainConfig(batch_size=32, flip=float(flip))

    def pretrain_data(generator):
        return tinyworld.pretrain_batch(random.Random(int(torch.randint(2**62, (1,), generator=generator))), recipe, 0)

    cfg = demo.DemoConfig(tasks=("composition",), epochs=int(epochs), lr=float(lr), out="runs/relation_rl")
    policy.unet.requires_grad_(True)
    Trainer(policy, demo.make_tasks(cfg.tasks, detector, preference), demo.train_config(cfg),
            pretrain_data=pretrain_data).train()
    report(f"after {epochs} iterations", policy, detector)


if __name__ == "__main__":
    main(*sys.argv[1:])
