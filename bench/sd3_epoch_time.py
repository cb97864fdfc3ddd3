"""Epoch time on the tiny SD3 pipeline: minirl's Flow-GRPO epoch vs the bare transformer passes (the floor).

The workload is Flow-GRPO's recipe in miniature: the tiny random SD3 pipeline (diffusers' test config) with
16x16 latents (`minirl make-tiny-sd --sd3 --sample-size 16`: 256 image tokens; the default 32x32, 1,024 tokens,
takes 50-90 s an epoch on 2 cores), JPEG compressibility, 16 samples an epoch in batches of 8 (groups of 4,
group-relative advantages), 10 flow SDE steps with noise level 0.7 and guidance 4.5, LoRA rank 4, train batch
4, with and without the KL term (weight 0.04). Each run is a fresh process; the runs take turns, round after
round, because this machine drifts within minutes; we quote medians of per-round ratios (as bench/epoch_time.py).

    .venv/bin/python bench/sd3_epoch_time.py     # about 8 minutes on 2 cores

The floor is the time of the transformer passes alone, with the same LoRA transformer and prompt shapes:
20 forward passes at batch 16 (2 sample batches x 10 steps; guidance doubles the batch), then per trained
transition group (4 train batches x 9 steps: min_sigma leaves the last step, std 0.006, out) one forward and
backward at batch 8 and, for the KL term, one forward without gradient with the adapters off.
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
PIPELINE = ROOT / "runs" / "tiny-sd3-16"
SETTINGS = ["--reward", "jpeg_compressibility", "--prompts", "cat,dog,horse,monkey", "--group-size", "4",
            "--advantages", "group", "--samples-per-epoch", "16", "--sample-batch-size", "8", "--train-batch-size",
            "4", "--steps", "10", "--noise-level", "0.7", "--guidance", "4.5", "--lora-rank", "4",
            "--timestep-fraction", "1.0", "--inner-epochs", "1", "--clip-range", "1e-4", "--adv-clip", "5",
            "--lr", "3e-4", "--seed", "0"]
TRAINED_STEPS = 9
TEXT_TOKENS = 77 + 128  # CLIP's 77 and T5's 128 (zeros without T5), as sd.policy_from_pipeline encodes them


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_minirl(epochs, extra):
    from minirl.cli import main
    from minirl.runlog import read_metrics
    out = ROOT / "runs" / "bench-sd3-minirl"
    main(["train", "--pipeline", str(PIPELINE), *SETTINGS, "--epochs", str(epochs), "--out", str(out), "--overwrite",
          "--image-every", "0", "--save-every", str(epochs), *extra])
    seconds = [m["epoch_seconds"] for m in read_metrics(out)]
    print(json.dumps({"epoch_seconds": seconds, "peak_rss_mb": peak_rss_mb()}))


def worker_floor(kl):
    """Bare transformer passes of one epoch: no sampler, prompt encoder, VAE, reward or optimizer."""
    import torch
    from minirl.sd import add_lora, load_pipeline
    transformer = add_lora(load_pipeline(PIPELINE).transformer, 4)
    config = transformer.config
    size, channels = config.sample_size, config.in_channels
    embeds = torch.randn(16, TEXT_TOKENS, config.joint_attention_dim)
    pooled = torch.randn(16, config.pooled_projection_dim)

    def call(batch):
        return transformer(hidden_states=torch.randn(batch, channels, size, size), timestep=1000 * torch.rand(batch),
                           encoder_hidden_states=embeds[:batch], pooled_projections=pooled[:batch]).sample

    def passes():
        with torch.no_grad():
            for _ in range(2 * 10):
                call(16)
        for _ in range(4 * TRAINED_STEPS):
            call(8).mean().backward()
            if kl:
                with torch.no_grad():
                    transformer.disable_adapters()
                    call(8)
                    transformer.enable_adapters()
    passes()  # warm-up, as minirl's first epoch
    start = time.perf_counter()
    passes()
    print(json.dumps({"epoch_seconds": [time.perf_counter() - start], "peak_rss_mb": peak_rss_mb()}))


def run(cmd):
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{cmd} failed:\n{result.stderr[-3000:]}")
    line = next(json.loads(line) for line in result.stdout.splitlines() if line.startswith("{"))
    seconds = line["epoch_seconds"]
    return statistics.median(seconds[1:] or seconds), line["peak_rss_mb"]  # the first epoch includes warm-up


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--kl", type=int, default=1, help=argparse.SUPPRESS)
    args, extra = parser.parse_known_args()  # a minirl worker passes the rest to `minirl train`
    if args.worker == "minirl":
        return worker_minirl(args.epochs, extra)
    if args.worker == "floor":
        return worker_floor(bool(args.kl))
    if not PIPELINE.exists():
        from minirl.sd import make_tiny_sd3
        make_tiny_sd3(PIPELINE, sample_size=16)
    me = [sys.executable, __file__, "--epochs", str(args.epochs), "--worker"]
    runs = {  # name: (command, the floor it is measured against)
        "minirl, KL 0.04": (me + ["minirl", "--kl-weight", "0.04"], "floor, KL"),
        "minirl, no KL": (me + ["minirl", "--kl-weight", "0"], "floor, no KL"),
        "floor, KL": (me + ["floor", "--kl", "1"], "floor, KL"),
        "floor, no KL": (me + ["floor", "--kl", "0"], "floor, no KL"),
    }
    results = {name: [] for name in runs}
    for r in range(args.rounds):
        for name, (cmd, _) in runs.items():
            results[name].append(run(cmd))
            print(f"round {r + 1} {name}: {results[name][-1][0]:.2f} s/epoch, {results[name][-1][1]:.0f} MB", flush=True)
    print("\n| run | epoch s (median) | vs its floor (median of rounds) | peak RSS MB |")
    print("|---|---|---|---|")
    for name, (_, floor) in runs.items():
        seconds = [s for s, _ in results[name]]
        vs_floor = statistics.median(s / f for s, (f, _) in zip(seconds, results[floor]))
        peak = statistics.median(p for _, p in results[name])
        print(f"| {name} | {statistics.median(seconds):.2f} | {vs_floor:.2f}x | {peak:.0f} |")


if __name__ == "__main__":
    main()
