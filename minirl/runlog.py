"""What a run leaves in its folder, so that it can be read, plotted and reproduced from the folder alone.

    config.json     the resolved config, the command line, the batch arithmetic, package versions
    metrics.jsonl   one JSON line per epoch (also sent to Accelerate's trackers when the run has any)
    images/         a grid of each task's first sample batch of each epoch (1-based, like metrics), with
                    its prompts and rewards in a .json
    reward_curves.png   each task's mean reward per epoch (`plot_reward_curves`)
Only the main process writes.
"""

import json
import platform
import sys
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

from tqdm.auto import tqdm

PACKAGES = ("minirl", "torch", "diffusers", "transformers", "peft", "accelerate", "safetensors")


def versions():
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


class RunLog:
    def __init__(self, out, accelerator, run_info):
        self.out, self.acc, self.run_info = out, accelerator, run_info
        self.main = accelerator.is_main_process

    def start(self, config, summary, verbose=True):
        """Write config.json (with the summary) and print the summary if verbose; start the trackers."""
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            record = {"config": asdict(config), "run": self.run_info, "command": sys.argv, "summary": summary.split("\n"),
                      "num_processes": self.acc.num_processes, "versions": versions()}
            (self.out / "config.json").write_text(json.dumps(record, indent=2))
            (self.out / "metrics.jsonl").write_text("")
            if verbose:
                print(summary, flush=True)
        if self.acc.log_with:
            self.acc.init_trackers("minirl", config=asdict(config))

    def resumed(self, epoch):
        """Keep the metrics of epochs up to `epoch`, so a resumed run's file equals an uninterrupted one's."""
        if self.main:
            path = self.out / "metrics.jsonl"
            lines = path.read_text().splitlines() if path.exists() else []
            kept = [line for line in lines if json.loads(line)["epoch"] <= epoch]
            path.write_text("".join(line + "\n" for line in kept))
            print(f"resumed at epoch {epoch}", flush=True)
        if self.acc.log_with:
            self.acc.init_trackers("minirl")

    def metrics(self, metrics):
        if self.main:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(metrics) + "\n")
        if self.acc.log_with:
            self.acc.log(metrics, step=metrics["epoch"])

    def want_images(self, epoch, every):
        return self.main and every > 0 and epoch % every == 0

    def images(self, images, prompts, rewards, name):
        from torchvision.utils import save_image
        folder = self.out / "images"
        folder.mkdir(parents=True, exist_ok=True)
        save_image(images.float().cpu(), folder / f"{name}.png", nrow=min(8, len(images)), padding=1)
        captions = [{"prompt": p, "reward": float(r)} for p, r in zip(prompts, rewards)]
        (folder / f"{name}.json").write_text(json.dumps(captions, indent=1))

    def progress(self, total, initial):
        return tqdm(total=total, initial=initial, desc="epochs", disable=not self.main, dynamic_ncols=True)


def read_metrics(run_folder):
    """The list of per-epoch metric dicts of a run folder."""
    with open(Path(run_folder) / "metrics.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_reward_curves(run_folder):
    """Write run_folder/reward_curves.png: each task's mean reward per epoch (for a distribution reward, its
    statistical parity, since the reward is a credit). Draws on its own Figure: the user's matplotlib backend
    (inline plots in a notebook) is left as it is."""
    from matplotlib.figure import Figure
    out = Path(run_folder)
    metrics = read_metrics(out)
    sp = lambda key: key.replace("reward_mean", "statistical_parity")  # noqa: E731
    keys = [sp(k) if sp(k) in metrics[0] else k for k in metrics[0] if k.endswith("reward_mean")]
    fig = Figure(figsize=(3.6 * len(keys), 3.0))
    for i, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), i + 1)
        ax.plot([m["epoch"] for m in metrics], [m[key] for m in metrics], marker=".")
        ax.set_title(key.replace("/", ": "), fontsize=10)
        ax.set_xlabel("iteration")
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.axes[0].set_ylabel("mean over the batch")
    fig.tight_layout()
    fig.savefig(out / "reward_curves.png", dpi=100)
    return out / "reward_curves.png"
