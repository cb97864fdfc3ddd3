"""What a reward costs in an epoch: seconds per image and peak memory of each reward model at its real size
(random weights: the architecture alone decides the cost), next to Stable Diffusion's UNet.

Each model runs in a fresh process (so its peak memory is its own): built with `random_model(real_size=True)`,
scored on a batch of 512 px images without gradients, as the trainer scores samples, timed after one warm-up
call (median of the timed calls). The UNet row is SD 1.5's UNet (random weights) at 512 px: one guided
sampling pass (batch 2: unconditional and conditional), and the 50 such passes a 50-step sample needs.
bench/gpu_check.py scores with the same code (`reward_model_cost`), every model in its one process: on a GPU
each model's peak memory is counted from what was allocated before it was built.

    .venv/bin/python bench/reward_cost.py                       # CPU, fp32 (about 15 minutes on 2 cores)
    .venv/bin/python bench/reward_cost.py --device cuda --dtype bf16
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

NAMES = ("imagereward", "pickscore", "hpsv2", "aesthetic", "clipscore", "composition", "parity", "unet")
PROMPT = "a photo of a cat left of a dog"


def timed(call, device):
    """(call(), its seconds), with the GPU's queued work finished before the clock starts and before it stops."""
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start


def reset_peak_memory(device):
    """Start a new peak for peak_memory_mib (on a GPU; a process's peak RSS cannot be reset)."""
    import torch
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device):
    """The most memory held since reset_peak_memory: the GPU's allocated tensors, or on a CPU the process's peak
    resident set (since it started)."""
    import torch
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def calls(call, device, repeats):
    """Seconds of repeats + 1 calls (the first warms up), and the peak memory (MiB) they reached."""
    reset_peak_memory(device)
    seconds = [timed(call, device)[1] for _ in range(repeats + 1)]
    return seconds, peak_memory_mib(device)


def reward_model_cost(name, device, dtype, batch, repeats, real_size=True, size=512):
    """Reward `name` built with random weights (its real size, or its tiny twin), scoring `batch` images of
    `size` px without gradients: {name, params_M, seconds_per_image (median of the timed calls), peak_MiB (on a
    GPU less what was allocated before the model was built), calls (seconds, warm-up first)}."""
    import torch
    from minirl.rewards import model_module
    torch.manual_seed(0)
    before = torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    reward = model_module(name).random_model(real_size=real_size).freeze(device, dtype)
    images = torch.rand(batch, 3, size, size, device=device)
    with torch.no_grad():
        seconds, peak = calls(lambda: reward(images, [PROMPT] * batch, [{}] * batch), device, repeats)
    return {"name": name, "params_M": sum(p.numel() for p in reward.parameters()) / 1e6,
            "seconds_per_image": statistics.median(seconds[1:]) / batch, "peak_MiB": peak - before, "calls": seconds}


def unet_cost(device, dtype, repeats):
    """SD 1.5's UNet (random weights) at 512 px: one guided sampling pass (batch 2), in the same fields."""
    import torch
    from diffusers import UNet2DConditionModel

    from architectures import SD15_UNET
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET).to(device, dtype).eval()
    x = torch.randn(2, 4, 64, 64, device=device, dtype=dtype)
    embeds = torch.randn(2, 77, 768, device=device, dtype=dtype)
    with torch.no_grad():
        seconds, peak = calls(lambda: unet(x, torch.tensor([500, 500], device=device), encoder_hidden_states=embeds),
                              device, repeats)
    return {"name": "unet", "params_M": sum(p.numel() for p in unet.parameters()) / 1e6,
            "seconds_per_image": statistics.median(seconds[1:]), "peak_MiB": peak, "calls": seconds}


def worker(name, device, dtype, batch, repeats):
    import torch
    device, dtype = torch.device(device), {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    if name == "unet":
        return print(json.dumps(unet_cost(device, dtype, repeats)))
    print(json.dumps(reward_model_cost(name, device, dtype, batch, repeats)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--names", default=",".join(NAMES))
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.device, args.dtype, args.batch, args.repeats)
    rows = []
    for name in args.names.split(","):
        out = subprocess.run([sys.executable, __file__, "--worker", name, "--device", args.device, "--dtype",
                              args.dtype, "--batch", str(args.batch), "--repeats", str(args.repeats)],
                             capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    unet = next((r for r in rows if r["name"] == "unet"), None)
    print(f"\n{args.device}, {args.dtype}, batch {args.batch}, 512 px images\n")
    print("| model | parameters | seconds per image | peak memory (MiB) |")
    print("|---|---|---|---|")
    for r in rows:
        label = "SD 1.5 UNet, one guided pass" if r["name"] == "unet" else r["name"]
        print(f"| {label} | {r['params_M']:.0f}M | {r['seconds_per_image']:.2f} | {r['peak_MiB']:.0f} |")
    if unet:
        print(f"| SD 1.5 UNet, a 50-step guided sample | | {50 * unet['seconds_per_image']:.1f} | |")


if __name__ == "__main__":
    main()
