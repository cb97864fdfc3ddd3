"""What a reward costs in an epoch: seconds per image and peak memory of each reward model at its real size
(random weights: the architecture alone decides the cost), next to Stable Diffusion's UNet.

Each model runs in a fresh process (so its peak memory is its own): built with `random_model(real_size=True)`,
scored on a batch of 512 px images without gradients, as the trainer scores samples, timed after one warm-up
call (median of the timed calls). The UNet row is SD 1.5's UNet (random weights) at 512 px: one guided
sampling pass (batch 2: unconditional and conditional), and the 50 such passes a 50-step sample needs.

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


def worker(name, device, dtype, batch, repeats):
    import torch
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    torch.manual_seed(0)
    if name == "unet":
        from diffusers import UNet2DConditionModel
        unet = UNet2DConditionModel(  # Stable Diffusion 1.5's UNet configuration
            sample_size=64, cross_attention_dim=768, attention_head_dim=8, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280)).to(device, dtype).eval()
        x, embeds = torch.randn(2, 4, 64, 64, device=device, dtype=dtype), torch.randn(2, 77, 768, device=device, dtype=dtype)
        call = lambda: unet(x, torch.tensor([500, 500], device=device), encoder_hidden_states=embeds)  # noqa: E731
        params = sum(p.numel() for p in unet.parameters())
    else:
        from minirl.rewards import model_module
        reward = model_module(name).random_model(real_size=True).to(device, dtype)
        images = torch.rand(batch, 3, 512, 512, device=device)
        call = lambda: reward(images, [PROMPT] * batch, [{}] * batch)  # noqa: E731
        params = sum(p.numel() for p in reward.parameters())
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = []
    with torch.no_grad():
        for _ in range(repeats + 1):
            sync()
            start = time.perf_counter()
            call()
            sync()
            seconds.append(time.perf_counter() - start)
    per_call = statistics.median(seconds[1:])
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    per_image = per_call / (2 if name == "unet" else batch) * (2 if name == "unet" else 1)
    print(json.dumps({"name": name, "params_M": params / 1e6, "seconds_per_image": per_image,
                      "peak_MiB": peak, "calls": seconds}))


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
