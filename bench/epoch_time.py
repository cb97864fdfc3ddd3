"""Epoch time and peak memory: minirl vs TRL 0.23.1's DDPOTrainer vs the bare UNet passes (the floor).

The workload is the README's command: tiny SD pipeline (diffusers' test config, 64 px), JPEG compressibility,
16 samples an epoch in batches of 8, 20 DDIM steps with guidance 5, LoRA rank 4, train batch 4, every
timestep trained. Each tool runs in a fresh process; the tools take turns, round after round, because this
machine drifts by a third within minutes; we quote medians of per-round ratios.

    bash bench/setup_trl.sh                  # TRL in its own venv, bench/.venv-trl
    .venv/bin/python bench/epoch_time.py     # about 15 minutes on 2 cores

The floor is the time of the UNet passes alone: 40 forward passes at batch 16 (sampling, guidance doubles
the batch) plus one forward+backward at batch 8 per trained transition group (TRL: 4 train batches x 20
timesteps; minirl: 4 x 18, since its min_sigma leaves the two steps with sigma_t < 0.05 out).
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
PIPELINE = ROOT / "runs" / "tiny-sd"
SETTINGS = ["--prompts", "cat,dog,horse,monkey", "--samples-per-epoch", "16", "--sample-batch-size", "8",
            "--train-batch-size", "4", "--steps", "20", "--eta", "1.0", "--guidance", "5.0", "--lora-rank", "4",
            "--timestep-fraction", "1.0", "--inner-epochs", "1", "--clip-range", "1e-4", "--adv-clip", "5",
            "--lr", "3e-4", "--seed", "0"]


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_minirl(epochs, extra):
    from minirl.cli import main
    from minirl.runlog import read_metrics
    out = ROOT / "runs" / "bench-minirl"
    main(["train", "--pipeline", str(PIPELINE), "--reward", "jpeg_compressibility", *SETTINGS,
          "--epochs", str(epochs), "--out", str(out), "--overwrite", "--image-every", "0", "--save-every", str(epochs),
          *extra])
    seconds = [m["epoch_seconds"] for m in read_metrics(out)]
    print(json.dumps({"epoch_seconds": seconds, "peak_rss_mb": peak_rss_mb()}))


def worker_floor(trained_steps):
    """Bare UNet passes of one epoch, with the same LoRA UNet, no sampler, reward or optimizer."""
    import torch
    from minirl.sd import add_lora, load_pipeline
    unet = add_lora(load_pipeline(PIPELINE).unet, 4)
    embeds = torch.randn(16, 77, unet.config.cross_attention_dim)

    def passes():
        with torch.no_grad():
            for _ in range(40):
                unet(torch.randn(16, 4, 32, 32), torch.randint(0, 1000, (16,)), encoder_hidden_states=embeds)
        for _ in range(4 * trained_steps):
            out = unet(torch.randn(8, 4, 32, 32), torch.randint(0, 1000, (8,)), encoder_hidden_states=embeds[:8])
            out.sample.mean().backward()
    passes()  # warm-up, as the tools' first epoch
    start = time.perf_counter()
    passes()
    print(json.dumps({"epoch_seconds": [time.perf_counter() - start], "peak_rss_mb": peak_rss_mb()}))


def run(cmd):
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{cmd} failed:\n{result.stderr[-3000:]}")
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    seconds = [line["epoch_seconds"] for line in lines if "epoch_seconds" in line]
    seconds = seconds[0] if isinstance(seconds[0], list) else seconds
    peak = max(line["peak_rss_mb"] for line in lines if "peak_rss_mb" in line)
    return statistics.median(seconds[1:] or seconds), peak  # the first epoch includes warm-up


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--floor-steps", type=int, help=argparse.SUPPRESS)
    args, extra = parser.parse_known_args()  # a minirl worker passes the rest to `minirl train`
    if args.worker == "minirl":
        return worker_minirl(args.epochs, extra)
    if args.worker == "floor":
        return worker_floor(args.floor_steps)
    if not PIPELINE.exists():
        from minirl.sd import make_tiny_sd
        make_tiny_sd(PIPELINE)
    me = [sys.executable, __file__, "--epochs", str(args.epochs), "--worker"]
    tools = {
        "minirl": me + ["minirl"],
        "minirl, all 20 steps": me + ["minirl", "--min-sigma", "0"],
        "minirl, micro-batch 24": me + ["minirl", "--train-micro-batch", "24"],
        "trl": [str(HERE / ".venv-trl" / "bin" / "python"), str(HERE / "trl_ddpo.py"), "--pipeline", str(PIPELINE),
                "--epochs", str(args.epochs)],
        "floor, 20 steps": me + ["floor", "--floor-steps", "20"],
        "floor, 18 steps": me + ["floor", "--floor-steps", "18"],
    }
    results = {name: [] for name in tools}
    for r in range(args.rounds):
        for name, cmd in tools.items():
            results[name].append(run(cmd))
            print(f"round {r + 1} {name}: {results[name][-1][0]:.2f} s/epoch, {results[name][-1][1]:.0f} MB", flush=True)
    trl = [s for s, _ in results["trl"]]
    print("\n| run | epoch s (median) | vs TRL (median of rounds) | vs its floor | peak RSS MB |")
    print("|---|---|---|---|---|")
    for name, rows in results.items():
        seconds = [s for s, _ in rows]
        floor = results["floor, 18 steps" if name in ("minirl", "minirl, micro-batch 24") else "floor, 20 steps"]
        vs_trl = statistics.median(s / t for s, t in zip(seconds, trl))
        vs_floor = statistics.median(s / f for s, (f, _) in zip(seconds, floor))
        peak = statistics.median(p for _, p in rows)
        print(f"| {name} | {statistics.median(seconds):.2f} | {vs_trl:.2f}x | {vs_floor:.2f}x | {peak:.0f} |")


if __name__ == "__main__":
    main()
