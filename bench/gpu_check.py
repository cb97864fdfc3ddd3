"""The first thing to run in a GPU hour: minirl at real size on one GPU, in at most 8 minutes on an H100.

SD 1.5, SD 2 base and SD 3.5 medium are built with random weights from their hub configs (bench/architectures.py:
the architecture alone decides what a pass costs), at 512 px in bf16, each run with its preset's settings as
`minirl train --preset P` resolves them (the command line's own parser and `build`): SD 1.5 with `ddpo`'s, SD 2
base with `paper`'s, SD 3.5 medium with `flow-grpo`'s. Four parts:

  1 sampling     minirl's rollout (every step's log-probability, then the VAE decode), on the denoiser as the
                 trainer samples with it (LoRA, under Accelerate's autocast), against the pipeline's own call on
                 that denoiser at the same batch (the preset's training micro-batch), steps and guidance: the
                 median of 2 calls each, taking turns after a warm-up, and their ratio.
  2 train step   one PPO optimizer step over that many transitions (one trained timestep a chain; guided; the
                 preset's KL term with LoRA), with LoRA and with the full denoiser: seconds, peak memory, and
                 the first update's largest |log ratio| (on-policy: 0 but for bf16 rounding; PPO clips at 1e-4).
  3 epoch        the paper preset (SD 2 base, full UNet; ImageReward, skin-tone parity, composition; L_pre on
                 a folder of generated images) at 16 samples a task, one GPU's share of its 2,048 on 128:
                 minirl.cost's estimate against the second of two measured epochs.
  4 rewards      every reward model at its real size scoring 16 images of 512 px (bench/reward_cost.py's
                 `reward_model_cost`), next to an SD 1.5 sample of part 1.

It prints a row as each measurement lands, then one table, and writes JSON with the card's name after every
unit, so a run stopped early keeps what it measured. Out of memory is a result (noted, the run goes on); any
other error is printed with its traceback, recorded, and makes the exit status 1.

Time budget (--budget, default 450 s of the 8 minutes, imports and model building included): a unit starts only
if its planned time (PLANNED) fits in what is left; the others are skipped, saying so. The plan assumes about
4 ms an image for a forward pass of SD's UNet at 512 px on an H100 in bf16 (an A100's published ~8 ms, halved)
and 25 ms for SD 3.5 medium's transformer (2.2B parameters x 1,229 tokens x 2 FLOP = 5.5 TFLOP at ~220 TFLOP/s),
a backward pass twice a forward; the README's CPU measurements put the rest (text encoders, decode, a reward) at
a few percent of a sample. The whole plan is 320 s.

    python bench/gpu_check.py --out runs/gpu_check.json     # on one GPU, about 6 minutes
    python bench/gpu_check.py --smoke                       # the same code on the CPU at tiny sizes
"""

import argparse
import gc
import json
import os
import platform
import re
import statistics
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import numpy as np
import psutil
import torch
from PIL import Image

import architectures
import reward_cost
from minirl import cli, cost, sd
from minirl.presets import preset
from minirl.rewards import MODELS as REWARDS, model_module
from minirl.runlog import versions
from minirl.trainer import Trainer

PRESETS = {"sd15": "ddpo", "sd2": "paper", "sd35m": "flow-grpo"}  # each model with the preset that trains it
PROMPT = reward_cost.PROMPT
DTYPES = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}  # --mixed-precision's
# planned seconds of each unit on an H100 (module docstring): the LoRA units sample 6 times (50 steps at UNet batch
# 16, or 10 at 18 for SD 3.5) and take 3 train steps; the full units sample once; the epoch is 2 x 3 tasks x 50 steps
# at batch 32, plus the probe and 3 reward models; a reward model's unit is mostly its building on the CPU
PLANNED = {"sd15 LoRA": 30, "sd15 full": 15, "sd2 LoRA": 30, "sd2 full": 15, "sd35m LoRA": 50, "sd35m full": 25,
           "epoch": 85, **{f"reward {name}": 10 for name in REWARDS}}
ESTIMATE = re.compile(r"estimated epoch time on \S+: ([0-9.]+) s")
GPU_MEMORY = re.compile(r"estimated peak GPU memory: ([0-9.]+) GiB")


@dataclass
class Scale:
    """The sizes of a run: the real one on a GPU, or the smoke run's on a CPU."""
    tiny: bool                 # the tiny twins of the pipelines and the reward models
    train: tuple               # arguments every `minirl train` argument list ends with
    batch: int                 # part 1's samples and part 2's transitions (0: the preset's training micro-batch)
    epoch: tuple               # part 3's `minirl train` arguments
    reward_batch: int          # part 4's images a call
    pixels: int                # part 4's image size
    repeats: int               # timed calls after the warm-up
    budget: float              # seconds
    planned: dict = field(default_factory=dict)


FULL = Scale(False, (), 0, ("--samples-per-epoch", "16"), 16, 512, 2, 450.0, PLANNED)
SMOKE = Scale(True, ("--steps", "3", "--mixed-precision", "no"), 2,
              ("--samples-per-epoch", "4", "--sample-batch-size", "2", "--train-batch-size", "2",
               "--train-micro-batch", "2", "--group-size", "parity=2", "--pretrain-batch-size", "2"), 2, 32, 1, 3600.0)


class Report:
    """What was measured (rows), skipped, ran out of memory or failed; written as JSON after every unit."""

    def __init__(self, path, budget, header):
        self.path, self.budget, self.header = Path(path), budget, header
        self.rows, self.skipped, self.out_of_memory, self.errors = [], [], [], []
        self.started = psutil.Process().create_time()  # the budget counts Python's start and the imports too

    def elapsed(self):
        return time.time() - self.started

    def add(self, part, model, workload, seconds, compared="", peak_mib=None, **details):
        row = {"part": part, "model": model, "workload": workload, "seconds": seconds, "compared": compared,
               "peak_GiB": None if peak_mib is None else peak_mib / 1024, **details}
        self.rows.append(row)
        print(f"[{self.elapsed():4.0f} s] {_cells(row)}", flush=True)
        return row

    def attempt(self, unit, planned, run):
        """run() if its planned seconds fit in the budget left; out of memory and errors recorded, memory freed."""
        left = self.budget - self.elapsed()
        if planned > left:
            self.skipped.append(f"{unit}: planned {planned:.0f} s, {max(left, 0):.0f} s of the budget left")
            print(f"skipped {self.skipped[-1]}", flush=True)
            return self.write()
        print(f"[{self.elapsed():4.0f} s] {unit} (planned {planned:.0f} s)", flush=True)
        try:
            run()
        except torch.cuda.OutOfMemoryError as e:
            self.out_of_memory.append(f"{unit}: {str(e).splitlines()[0]}")
            print(f"out of memory: {self.out_of_memory[-1]}", flush=True)
        except Exception as e:  # noqa: BLE001 -- one failed unit must not lose the GPU hour's other numbers
            traceback.print_exc()
            self.errors.append(f"{unit}: {type(e).__name__}: {e}")
        finally:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.write()

    def write(self):
        record = {**self.header, "budget_s": self.budget, "elapsed_s": self.elapsed(), "rows": self.rows,
                  "skipped": self.skipped, "out_of_memory": self.out_of_memory, "errors": self.errors}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(record, indent=1))

    def table(self):
        memory = "peak memory (GiB)" if self.header["device"] == "cuda" else "peak RSS of the process (GiB)"
        lines = [f"{self.header['card']}, {self.header['dtype']}, {self.elapsed():.0f} s", "",
                 f"| part | model | workload | seconds | compared | {memory} |", "|---|---|---|---|---|---|"]
        lines += [f"| {_cells(row)} |" for row in self.rows]
        for kind, notes in (("skipped", self.skipped), ("out of memory", self.out_of_memory),
                            ("failed", self.errors)):
            lines += [f"{kind}: {note}" for note in notes]
        return "\n".join(lines)


def _cells(row):
    seconds = "" if row["seconds"] is None else f"{row['seconds']:.3g}"
    peak = "" if row["peak_GiB"] is None else f"{row['peak_GiB']:.1f}"
    return " | ".join([row["part"], row["model"], row["workload"], seconds, row["compared"], peak])


def train_args(name, *arguments):
    """The arguments of `minirl train --preset NAME ARGUMENTS`, parsed by the command line's own parser."""
    parser = argparse.ArgumentParser()
    train = cli.train_parser(parser.add_subparsers())
    train.set_defaults(**preset(name))
    return train.parse_args(["--preset", name, *arguments])


def trainer_for(model, args, scale, device):
    """A Trainer on `model` (random weights) built by the command line's `build` from args, and its pipeline."""
    pipe = architectures.build(model, device, DTYPES[args.mixed_precision], tiny=scale.tiny)
    args.resolution = None  # the architecture is built at the size measured (512 px; --smoke: tiny)
    acc, policy, tasks, config, pretrain_data = cli.build(args, pipe)
    config.verbose = False  # the summary and the estimate are printed here, once
    trainer = Trainer(policy, tasks, config, accelerator=acc, pretrain_data=pretrain_data)
    trainer.save = lambda: None  # a checkpoint (10 GB for a full UNet) is disk time, no part of an epoch
    return trainer, pipe


def model_units(report, model, scale, device, out):
    """Parts 1 and 2 of one model: a LoRA unit (sampling against the pipeline, a LoRA train step) and a full unit
    (a rollout to train on, a full train step)."""
    name = PRESETS[model]
    base = train_args(name, *scale.train)
    n = scale.batch or base.train_micro_batch or base.train_batch_size
    rank = base.lora_rank or 4  # the paper trains the full UNet; its LoRA row uses DDPO's rank
    label = architectures.MODELS[model]["label"]
    step = ["--reward", "jpeg_compressibility", "--prompts", PROMPT, "--group-size", str(n),
            "--samples-per-epoch", str(n), "--sample-batch-size", str(n), "--train-batch-size", str(n),
            "--train-micro-batch", str(n), "--timestep-fraction", "0.01", "--image-every", "0", *scale.train]
    # --timestep-fraction 0.01: one trained timestep a chain (n_train = max(1, int(0.01 x trainable steps)))

    def lora():
        args = train_args(name, *step, "--lora-rank", str(rank), "--out", str(out / f"{model}-lora"))
        trainer, pipe = trainer_for(model, args, scale, device)
        pixels = sd.resolution(pipe)
        settings = f"batch {n}, {pixels} px, {args.steps} steps, CFG {args.guidance}, LoRA {rank}"
        extra = {"max_sequence_length": 128} if sd.is_sd3(pipe) else {"eta": args.eta}  # as policy_from_pipeline
        measured = alternate({
            "minirl": lambda: rollout(trainer.policy, n),
            "pipeline": lambda: pipe([PROMPT] * n, num_inference_steps=args.steps, guidance_scale=args.guidance,
                                     height=pixels, width=pixels, output_type="pt", **extra).images,
        }, device, scale.repeats)
        (seconds, peak, traj), (pipe_seconds, pipe_peak, _) = measured["minirl"], measured["pipeline"]
        report.add("1 sampling", label, settings, seconds, f"{seconds / pipe_seconds:.2f}x the pipeline's "
                   f"{pipe_seconds:.3g} s", peak, per_sample=seconds / n, ratio=seconds / pipe_seconds,
                   pipeline_seconds=pipe_seconds, pipeline_peak_GiB=pipe_peak / 1024)
        kl = f", KL {args.kl_weight}" if args.kl_weight > 0 else ""
        train_step(report, trainer, traj, device, scale, label, f"LoRA rank {rank}: {n} transitions{kl}")

    def full():
        args = train_args(name, *step, "--lora-rank", "0", "--kl-weight", "0", "--out", str(out / f"{model}-full"))
        trainer, _ = trainer_for(model, args, scale, device)
        traj, seconds = reward_cost.timed(lambda: rollout(trainer.policy, n), device)
        train_step(report, trainer, traj, device, scale, label, f"full: {n} transitions", rollout_seconds=seconds)

    report.attempt(f"{model} LoRA", scale.planned.get(f"{model} LoRA", 0), lora)
    report.attempt(f"{model} full", scale.planned.get(f"{model} full", 0), full)


def rollout(policy, n):
    """n chains as the trainer samples them (a seed a sample), their images decoded; returns the Trajectory."""
    traj = policy.rollout([PROMPT] * n, [torch.Generator().manual_seed(i) for i in range(n)])
    policy.decode(traj.latents[:, -1])
    return traj


def alternate(calls, device, repeats):
    """Each of {name: call} timed repeats + 1 times, taking turns, the first round a warm-up:
    {name: (median seconds, peak memory in MiB, the last call's output)}."""
    seconds, peaks, outputs = {k: [] for k in calls}, dict.fromkeys(calls, 0.0), {}
    for _ in range(repeats + 1):
        for name, call in calls.items():
            reward_cost.reset_peak_memory(device)
            outputs[name], s = reward_cost.timed(call, device)
            seconds[name].append(s)
            peaks[name] = max(peaks[name], reward_cost.peak_memory_mib(device))
    return {k: (statistics.median(seconds[k][1:]), peaks[k], outputs[k]) for k in calls}


def train_step(report, trainer, traj, device, scale, label, workload, **details):
    """Part 2: the trainer's own update (PPO over the chains' transitions, clip, AdamW step), warm-up first."""
    n = len(traj.prompts)
    batch = {"latents": traj.latents, "log_probs": traj.log_probs, "embeds": traj.prompt_embeds,
             "advantages": torch.randn(n, generator=torch.Generator().manual_seed(0)).to(device),
             "timesteps": traj.timesteps, "first": 0}
    rows = torch.arange(n)
    reward_cost.reset_peak_memory(device)
    infos, seconds = zip(*(reward_cost.timed(lambda: trainer.update(trainer.tasks[0], batch, rows, 0, 0), device)
                           for _ in range(scale.repeats + 1)))
    first = infos[0]["max_abs_log_ratio"]  # before any step moved the weights: on-policy
    trainable = sum(p.numel() for p in trainer.params)
    report.add("2 train step", label, workload, statistics.median(seconds[1:]), f"first |log ratio| {first:.1e}",
               reward_cost.peak_memory_mib(device), first_max_abs_log_ratio=first, trainable_M=trainable / 1e6,
               calls=list(seconds), **details)


def epoch_unit(report, scale, device, out):
    """Part 3: the paper preset at a reduced sample count: minirl.cost's estimate against measured epochs."""
    def run():
        data = pretraining_folder(out / "pretrain", 4, 512 if not scale.tiny else 32)
        args = train_args("paper", "--epochs", "2", "--image-every", "0", "--pretrain-data", str(data),
                          "--out", str(out / "paper"), *scale.epoch, *scale.train)
        with mock.patch("minirl.rewards.load", random_reward(scale.tiny)):  # make_tasks loads from the hub else
            trainer, _ = trainer_for("sd2", args, scale, device)
        lines = [trainer.summary(), *cost.estimate(trainer)]
        print("\n".join(lines), flush=True)
        estimate, estimate_gib = parse_estimate(lines)
        seconds = []
        reward_cost.reset_peak_memory(device)
        trainer.train(on_epoch_end=lambda _, metrics: seconds.append(metrics["epoch_seconds"]))
        tasks = len(trainer.tasks)
        memory = f"; memory {estimate_gib:.1f} GiB" if estimate_gib is not None else ""
        report.add("3 epoch", "SD 2 base", f"paper preset: {args.samples_per_epoch} samples x {tasks} tasks + L_pre",
                   seconds[-1], f"estimate {estimate:.3g} s ({seconds[-1] / estimate:.2f}x){memory}; "
                   f"epoch 1 {seconds[0]:.3g} s", reward_cost.peak_memory_mib(device), estimate_seconds=estimate,
                   estimate_GiB=estimate_gib, epoch_seconds=seconds, estimate_lines=lines)
    report.attempt("epoch", scale.planned.get("epoch", 0), run)


def random_reward(tiny):
    """minirl.rewards.load's stand-in: the reward's random model (real size or tiny twin) on device in dtype."""
    def load(name, path_or_id=None, *, device, dtype, **options):
        if options.get("classes", "skin_tone") != "skin_tone":
            raise ValueError(f"the random parity reward has the skin_tone classes only; got {options['classes']!r}")
        return model_module(name).random_model(real_size=not tiny).freeze(device, dtype)
    return load


def pretraining_folder(folder, count, pixels):
    """count captioned JPEGs (smooth random colours) in the metadata.jsonl layout: data for the L_pre step."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(count):
        colours = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(colours).resize((pixels, pixels), Image.BICUBIC).save(folder / f"{i}.jpg")
        lines.append(json.dumps({"file_name": f"{i}.jpg", "text": PROMPT}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def parse_estimate(lines):
    """(epoch seconds, peak GPU GiB or None) from minirl.cost.estimate's lines."""
    text = "\n".join(lines)
    seconds, memory = ESTIMATE.search(text), GPU_MEMORY.search(text)
    if seconds is None:
        raise ValueError(f"minirl.cost.estimate no longer says 'estimated epoch time on DEVICE: N s' (it said "
                         f"{lines!r}); update ESTIMATE in bench/gpu_check.py")
    return float(seconds.group(1)), float(memory.group(1)) if memory else None


def reward_units(report, scale, device, dtype):
    """Part 4: each reward model at its real size, next to an SD 1.5 sample of part 1."""
    sample = next((row["per_sample"] for row in report.rows if row["part"] == "1 sampling"
                   and row["model"] == "SD 1.5"), None)
    for name in REWARDS:
        def run(name=name):
            row = reward_cost.reward_model_cost(name, device, dtype, scale.reward_batch, scale.repeats,
                                                real_size=not scale.tiny, size=scale.pixels)
            share = f"{100 * row['seconds_per_image'] / sample:.2g}% of an SD 1.5 sample" if sample else ""
            report.add("4 reward", name, f"{row['params_M']:.0f}M, {scale.reward_batch} images of {scale.pixels} px",
                       row["seconds_per_image"], share, row["peak_MiB"], calls=row["calls"])
        report.attempt(f"reward {name}", scale.planned.get(f"reward {name}", 0), run)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="the same code on the CPU at tiny sizes (seconds)")
    parser.add_argument("--out", default=None, help="the JSON report (default runs/gpu_check[_smoke].json)")
    parser.add_argument("--budget", type=float, default=None,
                        help=f"seconds; a unit starts only if its plan fits (default {FULL.budget:.0f}, smoke "
                             f"{SMOKE.budget:.0f})")
    parser.add_argument("--models", default=",".join(PRESETS), help="parts 1 and 2 on these models")
    parser.add_argument("--parts", default="1,2,3,4", help="which parts to run (1 and 2 run together)")
    args = parser.parse_args(argv)
    scale = SMOKE if args.smoke else FULL
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in PRESETS]
    if unknown:
        raise SystemExit(f"error: --models {args.models!r} names {unknown}; valid: {', '.join(PRESETS)}")
    parts = set(args.parts.split(","))
    if not parts <= {"1", "2", "3", "4"}:
        raise SystemExit(f"error: --parts {args.parts!r}; valid: a comma-separated subset of 1,2,3,4")
    if args.smoke:
        os.environ["ACCELERATE_USE_CPU"] = "1"  # Accelerate (in cli.build) then stays on the CPU beside a GPU too
        torch.set_num_threads(1)  # tiny models gain nothing from a second thread, and on a busy machine they wait
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        raise SystemExit("error: no GPU here; the real sizes take hours on a CPU: run --smoke for the CPU check")
    dtype = DTYPES[train_args("paper", *scale.train).mixed_precision]
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    out = Path(args.out or f"runs/gpu_check{'_smoke' if args.smoke else ''}.json")
    report = Report(out, scale.budget if args.budget is None else args.budget,
                    {"card": card, "device": device.type, "dtype": str(dtype).replace("torch.", ""),
                     "smoke": args.smoke, "versions": versions()})
    with tempfile.TemporaryDirectory() as tmp:
        if parts & {"1", "2"}:
            for model in models:
                model_units(report, model, scale, device, Path(tmp))
        if "3" in parts:
            epoch_unit(report, scale, device, Path(tmp))
        if "4" in parts:
            reward_units(report, scale, device, dtype)
    report.write()
    print(f"\n{report.table()}\n\nwritten to {out}")
    if report.errors:
        raise SystemExit(f"{len(report.errors)} unit(s) failed: {report.errors}")


if __name__ == "__main__":
    main()
