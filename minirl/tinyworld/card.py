"""Measurements for the tiny-world model card: loss curve, sample grids, pixel colour statistics.

    .venv/bin/python -m minirl.tinyworld.card runs/pretrain assets/tinyworld

Colours are read by `scenes.dominant_colour` (the palette colour of most non-background pixels): a pixel
heuristic for the card, not one of the course's learned reward models.
"""

import argparse
import json

import matplotlib.pyplot as plt
import torch
from torchvision.utils import save_image

from minirl.tinyworld import diffusion, scenes

GRID = ["a red circle", "a blue square", "a green triangle", "a yellow circle", "a circle", "a square",
        "two blue squares", "two red triangles", "a green triangle left of a yellow circle",
        "a red square above a blue circle", "a blue triangle next to a yellow square", "a circle"]


def sample(policy, prompts, seed):
    generators = [torch.Generator().manual_seed(1000 * seed + i) for i in range(len(prompts))]
    return policy.decode(policy.rollout(prompts, generators).latents[:, -1])


def share(colours, wanted):
    return sum(c == wanted for c in colours) / len(colours)


def train_seconds(losses):
    """Wall time of a pretraining run from its loss log, summed over resumed segments (each restarts the clock)."""
    total = previous = 0.0
    for record in losses:
        if record["seconds"] < previous:  # a resume
            total += previous
        previous = record["seconds"]
    return total + previous


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minirl.tinyworld.card", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a pretraining run folder (minirl pretrain --out)")
    parser.add_argument("out", help="where the card is written (card.json, loss.png, sample grids)")
    args = parser.parse_args(argv)
    run, out = args.run, args.out
    losses = [json.loads(line) for line in open(f"{run}/loss.jsonl")]
    smooth = torch.tensor([r["loss"] for r in losses]).unfold(0, 50, 1).mean(1)
    plt.figure(figsize=(5, 3))
    plt.plot([r["step"] for r in losses][49:], smooth)
    plt.yscale("log")
    plt.xlabel("step")
    plt.ylabel("L_pre (mean of 50 steps)")
    plt.tight_layout()
    plt.savefig(f"{out}/loss.png", dpi=100)
    card = {}
    for guidance in (1.0, 3.0):
        policy = diffusion.load_policy(f"{run}/model", num_steps=20, guidance_scale=guidance)
        named = [(colour, f"a {colour} {shape}") for colour in scenes.COLOURS for shape in scenes.SHAPES]
        correct = [share(scenes.dominant_colour(sample(policy, [p] * 8, 1)), c) for c, p in named]
        colourless = sum((scenes.dominant_colour(sample(policy, [f"a {s}"] * 32, 2)) for s in scenes.SHAPES), [])
        card[f"guidance_{guidance}"] = {"single_colour_accuracy": sum(correct) / len(correct),
                                        "colourless_red_share": share(colourless, "red"),
                                        "colourless_blank_share": share(colourless, None)}
        grid = sample(policy, [p for p in GRID for _ in range(4)], 3)
        save_image(grid, f"{out}/samples_cfg{guidance:g}.png", nrow=8, padding=1)
    card["final_loss_mean_of_last_200"] = sum(r["loss"] for r in losses[-200:]) / 200
    card["train_seconds"] = train_seconds(losses)
    card["steps"] = losses[-1]["step"]
    with open(f"{out}/card.json", "w") as f:
        f.write(json.dumps(card, indent=1))
    print(json.dumps(card, indent=1))


if __name__ == "__main__":
    plt.switch_backend("Agg")  # a command writes files: no window
    main()
