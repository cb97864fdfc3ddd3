"""What the course's notebooks share: the smoke switch, seeding, loading the tiny world, and plots.

Every notebook starts with

    from minirl import course
    SMOKE = course.smoke()      # True under CI (CI=true) or MINIRL_SMOKE=1: a shrunken run
    course.seed_everything(0)

and shows its results with `show_images` and `plot_curves`. Importing it turns off the loading bars of diffusers,
transformers and huggingface_hub (`quiet_libraries`): a notebook's outputs show its own progress only.
"""

import os
import random
from pathlib import Path

import numpy as np
import torch

ASSETS = Path(__file__).parents[1] / "assets" / "tinyworld"


def quiet_libraries():
    """Turn off the libraries' loading and saving bars ("Loading pipeline components", "Loading weights",
    "Writing model shards"): one bar for every model loaded or saved, which buries a notebook's own outputs."""
    from diffusers.utils import logging as diffusers_logging
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as transformers_logging
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    disable_progress_bars()


quiet_libraries()


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


def show_images(images, titles=None, ncols=8, scale=1.2, suptitle=None, row_labels=None):
    """A grid of images (N, 3, H, W) in [0, 1], each with an optional title, each row with an optional label
    on its left (row_labels: one string a row); returns the figure.

    The figure is sized from the grid: `scale` inches an image (at least 0.8, about 58 px on screen at the
    inline backend's 72 dpi, so a one-row grid with a long suptitle does not shrink its images; wider where
    the titles need it), plus room for the titles, the row labels and the suptitle. Text is 9 pt or larger."""
    import matplotlib.pyplot as plt
    images = images.detach().float().clamp(0, 1).cpu()
    ncols = min(ncols, len(images))
    nrows = -(-len(images) // ncols)
    if row_labels is not None and len(row_labels) != nrows:
        raise ValueError(f"row_labels needs one label a row: {nrows} rows, got {len(row_labels)} labels")
    size = max(scale, 0.8)                                                    # inches an image
    title_lines = max((str(t).count("\n") + 1 for t in titles), default=0) if titles is not None else 0
    label_chars = max((len(line) for label in row_labels or [] for line in str(label).split("\n")), default=0)
    title_chars = max((len(line) for t in titles for line in str(t).split("\n")), default=0) if titles else 0
    size = max(size, 0.068 * title_chars)                                     # titles do not overlap
    width = size * ncols + 0.075 * label_chars + 0.1
    height = nrows * (size + 0.17 * title_lines) + 0.4 * bool(suptitle) + 0.1
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.spines[:].set_visible(False)
    for i, (ax, image) in enumerate(zip(axes.flat, images)):
        ax.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
    for ax in axes.flat[len(images):]:
        ax.set_visible(False)
    for row, label in enumerate(row_labels or []):
        axes[row, 0].set_ylabel(label, fontsize=10, rotation=0, ha="right", va="center")
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    return fig


def plot_curves(curves, xlabel="iteration", ylabel="", title=None, ax=None):
    """One line per name: curves = {name: [y, ...]} (x = 1, 2, ...) or {name: ([x, ...], [y, ...])}."""
    import matplotlib.pyplot as plt
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3))
    integer_x = True
    for name, values in curves.items():
        x, y = values if isinstance(values, tuple) else (range(1, len(values) + 1), values)
        ax.plot(list(x), list(y), marker=".", label=name)
        integer_x = integer_x and all(float(v).is_integer() for v in x)
    if integer_x:  # iterations, steps: no fractional ticks
        from matplotlib.ticker import MaxNLocator
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(ax.get_lines()[0].get_xdata()) == 1:  # one point (a smoke run): one tick, no crowded offset labels
        ax.set_xticks(ax.get_lines()[0].get_xdata())
        ax.ticklabel_format(axis="y", useOffset=False)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=11)
    if len(curves) > 1:
        ax.legend(fontsize=9)
    return ax
