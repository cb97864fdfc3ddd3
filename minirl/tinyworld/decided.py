"""When is a sample's layout or colour decided, and by what? Policy-gradient RL credits the noise each DDIM
step adds (the actions); the starting noise x_T is the state, no action. If x_T already fixes what the reward
judges, RL has nothing to credit it to.

    .venv/bin/python -m minirl.tinyworld.decided [MODEL] [--timestep-spacing trailing] [--noise-level 0.7]
    # about 4 min on 2 CPU cores

Each chain (demo settings: 10 DDIM steps, eta 1, guidance 3) is restarted from its state before DDIM step k,
with fresh noise for step k on, three times; printed per k: how often the outcome stays the same, and how often
a chain that came out wrong comes out right after the restart. Were the outcome decided by the steps from k on,
that would be the model's success rate; were it fixed before step k, 0.
- relation: "left of" / "right of" on training captions (8 x 16 seeds); the outcome is whether the relation
  holds, among chains where the detector finds the named objects.
- objects: the same chains; the outcome is whether the detector finds exactly the named objects, wherever.
- objects, held out: held-out relation captions whose objects differ in colour and shape (8 x 16 seeds), which
  the model mostly draws in each other's colours; the same outcome.
- colour: "a circle", "a square", "a triangle" (64 seeds each); the outcome is the detector's colour, "wrong"
  is red (the data's bias).
A flow model (`minirl pretrain --objective flow`) steps with Flow-GRPO's SDE at --noise-level: the same
question for its steps, whose first adds noise of std noise_level.
"""

import argparse
import random

import torch

from minirl.tinyworld import demo, diffusion, judges, scenes
from minirl.tinyworld.diagnose import distinct_objects


def relation_judge(detector, prompts):
    """images -> (outcome: the relation holds, right: the same, valid: the named objects are drawn), each (B,)."""
    def judge(images):
        _, success, objects = judges.verdicts(detector, images, prompts)
        return success, success, objects  # with the named objects drawn, success is the relation holding
    return judge


def objects_judge(detector, prompts):
    """images -> (outcome and right: the named objects are drawn, wherever they are; valid: all True)."""
    def judge(images):
        _, _, objects = judges.verdicts(detector, images, prompts)
        return objects, objects, torch.ones(len(objects), dtype=torch.bool)
    return judge


def colour_judge(detector):
    """images -> (outcome: the detector's colour index, right: not red, valid: all True)."""
    def judge(images):
        colour = detector.colour(images)
        return colour, colour != list(scenes.COLOURS).index("red"), torch.ones(len(colour), dtype=torch.bool)
    return judge


@torch.no_grad()
def report(policy, prompts, judges_by_name, steps=4, restarts=3):
    """Roll the prompts' chains out once, restart them, and print each judge's numbers on the same images."""
    traj = policy.rollout(prompts, [torch.Generator().manual_seed(1000 + i) for i in range(len(prompts))])
    final = policy.decode(traj.latents[:, -1])
    restarted = [[policy.decode(policy.finish(traj.latents[:, k], k, traj.prompt_embeds,
                                              torch.Generator().manual_seed(77 + 100 * r + k)))
                  for r in range(restarts)] for k in range(steps)]
    for name, judge in judges_by_name.items():
        outcome, right, valid = judge(final)
        print(f"{name}: right {right[valid].float().mean():.2f} of {int(valid.sum())}")
        for k in range(steps):
            kept = counted = turned = wrong = 0
            for images in restarted[k]:
                outcome_k, right_k, valid_k = judge(images)
                both = valid & valid_k
                kept += ((outcome_k == outcome) & both).sum().item()
                counted += both.sum().item()
                turned += (right_k & ~right & both).sum().item()
                wrong += (~right & both).sum().item()
            print(f"  restarted before step {k} (t = {int(policy.scheduler.timesteps[k])}): outcome kept "
                  f"{kept / counted:.2f}, wrong -> right {turned / max(wrong, 1):.2f} (of {wrong})", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minirl.tinyworld.decided", description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", default=str(demo.ASSETS / "model"))
    parser.add_argument("--timestep-spacing", choices=diffusion.TIMESTEP_SPACINGS)
    parser.add_argument("--noise-level", type=float, default=0.7, help="a flow model's SDE noise")
    args = parser.parse_args(argv)
    policy = diffusion.load_policy(args.model, args.timestep_spacing, num_steps=10, guidance_scale=3.0,
                                   noise_level=args.noise_level)
    detector, _ = judges.load(demo.ASSETS / "judges")
    print("timesteps", policy.scheduler.timesteps.tolist(), "step std", policy.sigmas.tolist())
    captions = random.Random(0).sample([c for c in scenes.prompts("relation", "train")
                                        if scenes.parse(c)["relation"] in ("left of", "right of")], 8)
    relation_prompts = [c for c in captions for _ in range(16)]
    report(policy, relation_prompts, {"relation": relation_judge(detector, relation_prompts),
                                      "objects": objects_judge(detector, relation_prompts)})
    heldout_prompts = [c for c in random.Random(0).sample(distinct_objects("heldout"), 8) for _ in range(16)]
    report(policy, heldout_prompts, {"objects, held out": objects_judge(detector, heldout_prompts)})
    report(policy, [p for p in demo.COLOURLESS for _ in range(64)], {"colour": colour_judge(detector)})


if __name__ == "__main__":
    main()
