"""What the course's notebooks share: the smoke switch, seeding, loading the tiny world, and plots.

Every notebook starts with

    from minirl import course
    SMOKE = course.smoke()      # True under CI (CI=true) or MINIRL_SMOKE=1: a shrunken run
    course.seed_everything(0)

and shows its results with `show_images` and `plot_curves`.
"""

import os
import random
from pathlib import Path

import numpy as np
import torch

ASSETS = Path(__file__).parents[1] / "assets" / "tinyworld"


def smoke():
    """True when the environment asks for a shrunken run: CI=true (GitHub Actions and most CIs set it) or
    MINIRL_SMOKE=1. Notebooks read it once, in their parameters cell."""
    flag = lambda name: os.environ.get(name, "").strip().lower() in ("1", "true", "yes")  # noqa: E731
    return flag("CI") or flag("MINIRL_SMOKE")


def seed_everything(seed=0):
    """Seed Python, NumPy and torch; the tiny world's samples also take their own generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_tiny_world(num_steps=10, guidance_scale=3.0, **policy_kwargs):
    """The committed base model as a DiffusionPolicy, and its judges: (policy, detector, preference model)."""
    from minirl.tinyworld import diffusion, judges
    policy = diffusion.load_policy(str(ASSETS / "model"), num_steps=num_steps, guidance_scale=guidance_scale,
                                   **policy_kwargs)
    detector, preference = judges.load(ASSETS / "judges")
    return policy, detector, preference


def show_images(images, titles=None, ncols=8, scale=1.2, suptitle=None):
    """A grid of images (N, 3, H, W) in [0, 1], each with an optional title; returns the figure."""
    import matplotlib.pyplot as plt
    images = images.detach().float().clamp(0, 1).cpu()
    ncols = min(ncols, len(images))
    nrows = -(-len(images) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(scale * ncols, scale * nrows + 0.3 * (titles is not None)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, image) in enumerate(zip(axes.flat, images)):
        ax.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
        if titles is not None:
            ax.set_title(titles[i], fontsize=6)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return fig


def plot_curves(curves, xlabel="iteration", ylabel="", title=None, ax=None):
    """One line per name: curves = {name: [y, ...]} (x = 1, 2, ...) or {name: ([x, ...], [y, ...])}."""
    import matplotlib.pyplot as plt
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3))
    for name, values in curves.items():
        x, y = values if isinstance(values, tuple) else (range(1, len(values) + 1), values)
        ax.plot(list(x), list(y), marker=".", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    if len(curves) > 1:
        ax.legend(fontsize=8)
    return ax
