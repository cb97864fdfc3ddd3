"""What a run leaves in its folder, so that it can be read, plotted and reproduced from the folder alone.

    config.json     the resolved config, the command line, the batch arithmetic, package versions
    metrics.jsonl   one JSON line per epoch (also sent to Accelerate's trackers when the run has any)
    images/         a grid of each task's first sample batch of each epoch (1-based, like metrics), with
                    its prompts and rewards in a .json (also sent to the trackers that take images)
    eval/           the same for each evaluation on held-out prompts (`Trainer.evaluate`), every image of it
    reward_curves.png   each task's mean reward per epoch, and on held-out prompts (`plot_reward_curves`)
    .lock           held (fcntl.flock) by the process writing the run; the OS releases it when that process ends
Only the main process writes, and one process at a time: a run holds the folder's lock while it resumes and
trains (`hold`), and a second writer is refused. A folder whose config.json is not a run's is never written
into, and a new run in a folder that holds one replaces it whole (the command line asks for --overwrite), so
two runs never mix. config.json and a resume's metrics are replaced atomically; each metrics line is on disk
before its epoch's checkpoint.
"""

import fcntl
import json
import os
import platform
import shutil
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import torch
from tqdm.auto import tqdm

from minirl.checkpoint import write_text

PACKAGES = ("minirl", "torch", "diffusers", "transformers", "peft", "accelerate", "safetensors")
TRACKER_IMAGES = {"tensorboard": {"dataformats": "NHWC"}, "wandb": {}}  # trackers that log images: their options
RUN_FILES = ("checkpoints", "metrics.jsonl", "images", "eval", "reward_curves.png")  # a new run removes these, in order
LOCK = ".lock"
_HELD = {}  # run folder (resolved) -> its open lock file, while this process holds it


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

    def hold(self):
        """Take the run folder for this process (creating it) until `release` or the process's end; refuse a
        folder that cannot be a run's (check_out) or that another process holds. Again in the same process: a
        no-op."""
        if not self.main or self.out.resolve() in _HELD:
            return
        check_out(self.out, resume=True, label="run folder")
        self.out.mkdir(parents=True, exist_ok=True)
        lock = _lock(self.out)
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        _HELD[self.out.resolve()] = lock

    def release(self):
        lock = _HELD.pop(self.out.resolve(), None)
        if lock is not None:
            lock.close()  # closing the file releases its flock

    def start(self, config, summary, verbose=True):
        """Begin a new run in the held folder: a previous run's files go (RUN_FILES, out of sight at once, then
        deleted; checkpoints first, so an interrupted replacement leaves nothing to resume), config.json (with the
        summary) is written and the summary printed if verbose; start the trackers."""
        if self.main:
            if is_run_folder(self.out):
                trash = Path(tempfile.mkdtemp(dir=self.out, prefix=".replaced.", suffix=".tmp"))
                for name in RUN_FILES:
                    if (self.out / name).exists():
                        os.replace(self.out / name, trash / name)
            for scratch in self.out.glob(".replaced.*.tmp"):  # this one, and any an earlier kill left
                shutil.rmtree(scratch)
            record = {"config": asdict(config), "run": self.run_info, "command": sys.argv, "summary": summary.split("\n"),
                      "num_processes": self.acc.num_processes, "versions": versions()}
            _write(self.out / "config.json", json.dumps(record, indent=2))
            _write(self.out / "metrics.jsonl", "")
            if verbose:
                print(summary, flush=True)
        if self.acc.log_with:
            self.acc.init_trackers("minirl", config=asdict(config))

    def resumed(self, epoch):
        """Keep the metrics of epochs 1..epoch, so that a resumed run's file equals an uninterrupted one's: the
        lines past the checkpoint go, a torn last line (a full disk, a power loss) with them. The file is replaced
        whole, so a kill leaves the old one or the new one. A file that lacks one of those epochs is damaged:
        a ValueError names it, the line, and what to do."""
        if self.main:
            path = self.out / "metrics.jsonl"
            _write(path, "".join(line + "\n" for line in _metrics_through(path, epoch)))
            print(f"resumed at epoch {epoch}", flush=True)
        if self.acc.log_with:
            self.acc.init_trackers("minirl")

    def metrics(self, metrics):
        """Append the epoch's line, on disk before the epoch's checkpoint is (a resume needs every line up to it)."""
        if self.main:
            path = self.out / "metrics.jsonl"
            with _naming(path), open(path, "a") as f:
                f.write(json.dumps(metrics) + "\n")
                f.flush()
                os.fsync(f.fileno())
        if self.acc.log_with:
            self.acc.log(metrics, step=metrics["epoch"])

    def want_images(self, epoch, every):
        return self.main and every > 0 and epoch % every == 0

    def images(self, images, prompts, rewards, name, step, folder="images"):
        """Write a grid of the images (B, 3, H, W) in [0, 1] to folder/name.png, their prompts and rewards to
        folder/name.json, and send the grid to the run's trackers that take images (TensorBoard, W&B) at `step`."""
        from torchvision.utils import make_grid, save_image
        path = self.out / folder
        path.mkdir(parents=True, exist_ok=True)
        grid = make_grid(images.float().cpu(), nrow=min(8, len(images)), padding=1)   # (3, H', W')
        save_image(grid, path / f"{name}.png")
        captions = [{"prompt": p, "reward": float(r)} for p, r in zip(prompts, rewards)]
        (path / f"{name}.json").write_text(json.dumps(captions, indent=1))
        pixels = (grid.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()        # (H', W', 3)
        for tracker in self.acc.trackers:
            if tracker.name in TRACKER_IMAGES:
                tracker.log_images({f"{folder}/{name}": [pixels]}, step=step, **TRACKER_IMAGES[tracker.name])

    def progress(self, total, initial):
        return tqdm(total=total, initial=initial, desc="epochs", disable=not self.main, dynamic_ncols=True)


def check_out(out, resume=False, overwrite=False, label="--out"):
    """Refuse a run folder before any work, in one line naming it, when a run there would fail or lose data: a
    file, or a folder under a file; a folder that cannot be written; a folder whose config.json is not a run's (a
    model's folder: the run would replace its config). A new run (not `resume`) also needs an empty folder, or
    one that holds a run and `overwrite` (the run then replaces it). Reads only: every process may call it."""
    out = Path(out)
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        where = "is a file" if existing == out else f"is under {str(existing)!r}, which is a file"
        raise ValueError(f"{label} {str(out)!r} {where}; give a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{label} {str(out)!r} cannot be written: {str(existing)!r} is not writable (a read-only "
                         f"file system or no permission); give a folder you can write to")
    if existing != out:
        return  # a new folder
    if (out / "config.json").exists() and not is_run_folder(out):
        raise ValueError(f"{label} {str(out)!r} holds a config.json that is not a minirl run's (a model's folder?); "
                         f"give a new or empty folder")
    others = sorted(p.name for p in out.iterdir() if p.name != LOCK)
    if resume or not others or (overwrite and is_run_folder(out)):
        return
    if is_run_folder(out):
        raise ValueError(f"{label} {str(out)!r} already holds a run; continue it with --resume, replace it with "
                         f"--overwrite, or give another --out")
    raise ValueError(f"{label} {str(out)!r} is not empty and holds no run (it holds {', '.join(map(repr, others[:3]))}"
                     f"{', ...' if len(others) > 3 else ''}); give a new or empty folder")


def is_run_folder(folder):
    """Whether folder/config.json is the record of a minirl run (RunLog.start writes it)."""
    try:
        record = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and {"config", "run", "versions"} <= record.keys()


def _lock(out):
    """out/.lock, open and flocked by this process (flock: the OS drops it when the process ends, so a crashed
    run never blocks the folder); a ValueError naming the process that holds it."""
    lock = open(out / LOCK, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "?"
        lock.close()
        raise ValueError(f"run folder {str(out)!r} is in use by process {holder}: one process writes a run at a time; "
                         f"wait for it to end, or give another folder") from None
    return lock


def _metrics_through(path, epoch):
    """The lines of metrics.jsonl for epochs 1..epoch, in order; a ValueError naming the file if one is missing."""
    what_to_do = "restore it, or start the run again with --overwrite"
    lines = [line for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    kept = []
    for number, line in enumerate(lines, 1):
        if len(kept) == epoch:
            break  # past the checkpoint: dropped, torn or not
        try:
            found = json.loads(line)["epoch"]
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"metrics file {str(path)!r} is damaged at line {number} ({line[:20]!r}), before the "
                             f"checkpoint's epoch {epoch}; {what_to_do}") from None
        if found != len(kept) + 1:
            raise ValueError(f"metrics file {str(path)!r} is damaged: line {number} is epoch {found!r} where epoch "
                             f"{len(kept) + 1} belongs; {what_to_do}")
        kept.append(line)
    if len(kept) < epoch:
        raise ValueError(f"metrics file {str(path)!r} is damaged: it holds {len(kept)} epochs, and the checkpoint is "
                         f"at epoch {epoch}; {what_to_do}")
    return kept


def _write(path, text):
    """Replace a file's contents atomically (checkpoint.write_text), naming the file in a full disk's error."""
    with _naming(path):
        write_text(path, text)


@contextmanager
def _naming(path):
    """An OSError without a file name (a full disk, met while writing) gets this file's name."""
    try:
        yield
    except OSError as e:
        if e.filename is not None:
            raise
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e


def read_metrics(run_folder):
    """The list of per-epoch metric dicts of a run folder."""
    with open(Path(run_folder) / "metrics.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_reward_curves(run_folder):
    """Write run_folder/reward_curves.png: each task's mean reward per epoch (for a distribution reward, its
    statistical parity, since the reward is a credit), and on the held-out prompts where the run evaluated them.
    Draws on its own Figure: the user's matplotlib backend (inline plots in a notebook) is left as it is."""
    from matplotlib.figure import Figure
    out = Path(run_folder)
    metrics = read_metrics(out)
    names = dict.fromkeys(k for m in metrics for k in m)
    sp = lambda key: key.replace("reward_mean", "statistical_parity")  # noqa: E731
    keys = [sp(k) if sp(k) in names else k for k in names if k.endswith("reward_mean") and "eval_" not in k]
    fig = Figure(figsize=(3.6 * len(keys), 3.0))
    for i, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), i + 1)
        task, _, name = key.rpartition("/")
        held_out = f"{task}/eval_{name}" if task else f"eval_{name}"   # Trainer.evaluate's, on some epochs
        for label, curve in (("training samples", key), ("held-out prompts", held_out)):
            points = [(m["epoch"], m[curve]) for m in metrics if curve in m]
            if points:
                ax.plot(*zip(*points), marker=".", label=label)
        if held_out in names:
            ax.legend(fontsize=8)
        ax.set_title(key.replace("/", ": "), fontsize=10)
        ax.set_xlabel("iteration")
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.axes[0].set_ylabel("mean over the batch")
    fig.tight_layout()
    fig.savefig(out / "reward_curves.png", dpi=100)
    return out / "reward_curves.png"
