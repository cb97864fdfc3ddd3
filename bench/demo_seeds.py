"""The demo on several seeds: the numbers behind its claims and the README table (mean +- std over seeds).

Runs `minirl demo`'s joint run once a seed, one after the other, with the base model evaluated once and shared
(as `demo.alignment_tax` does), and the base evaluated again with other evaluation seeds: that spread is the
noise of one evaluation, the yardstick for "did not fall". Writes every seed's metrics to --json.

    OMP_NUM_THREADS=1 .venv/bin/python bench/demo_seeds.py --seeds 0,1,2,3,4   # 5-8 min a seed on 2 busy cores
"""

import argparse
import json
import statistics
import time
from dataclasses import asdict, fields
from pathlib import Path

from safetensors.torch import save_file

from minirl.tinyworld import demo, diffusion, judges


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--eval-seeds", default="1,2,3,4",
                        help="extra evaluations of the base (its spread); empty: none")
    parser.add_argument("--out", default="/tmp/demo/runs")
    parser.add_argument("--json", default="/tmp/demo/seeds.json")
    for f in fields(demo.DemoConfig):
        if f.name in ("epochs", "pretrain_beta", "parity_weight", "lr", "eval_samples"):
            parser.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    parser.add_argument("--summary", action="store_true", help="only print the table of an existing --json")
    args = parser.parse_args()
    if args.summary:
        return summary(json.loads(Path(args.json).read_text()))
    seeds = [int(s) for s in args.seeds.split(",")]
    settings = {k: getattr(args, k) for k in ("epochs", "pretrain_beta", "parity_weight", "lr", "eval_samples")}
    record = {"settings": settings, "seeds": seeds, "runs": {}, "base_eval": {}}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)

    base = None
    for seed in seeds:
        start = time.perf_counter()
        cfg = demo.DemoConfig(seed=seed, out=f"{args.out}/seed{seed}", **settings)
        result = demo.run(cfg, print, base)
        base = result["base"], result["base_images"]
        record["base_eval"]["0"] = result["base"]
        record["runs"][str(seed)] = {"fine_tuned": result["fine_tuned"], "seconds": time.perf_counter() - start}
        if seed == seeds[0]:
            save_file({f"{stage}/{name}": images.clone() for stage, by_set in
                       (("before", result["base_images"]), ("after", result["images"]))
                       for name, images in by_set.items()}, path.parent / "images.safetensors")
        path.write_text(json.dumps(record, indent=1))

    detector, preference = judges.load(cfg.judges)
    policy = diffusion.load_policy(cfg.model, num_steps=cfg.steps, guidance_scale=cfg.guidance)
    for s in filter(None, args.eval_seeds.split(",")):
        record["base_eval"][s] = demo.evaluate(policy, detector, preference, cfg.eval_samples, int(s))[0]
        path.write_text(json.dumps(record, indent=1))
    summary(record)


def summary(record):
    """The README table (markdown): base over evaluation seeds, RL over training seeds, mean +- std; and which
    of the demo's claims held on every seed, with the rater's noise taken from the base's evaluations."""
    ms = lambda xs: f"{statistics.mean(xs):.3f} +- {statistics.stdev(xs) if len(xs) > 1 else 0:.3f}"  # noqa: E731
    runs = record["runs"]
    lines = [f"| metric | base (eval seeds {', '.join(record['base_eval'])}) | RL (seeds {', '.join(runs)}) |",
             "|---|---|---|"]
    lines += [f"| {label} | {ms([m[key] for m in record['base_eval'].values()])} | "
              f"{ms([r['fine_tuned'][key] for r in runs.values()])} |" for key, label, _ in demo.ROWS]
    print("\n".join(lines))
    noise = statistics.stdev([m[demo.RATER] for m in record["base_eval"].values()]) \
        if len(record["base_eval"]) > 1 else 0.0
    print(f"rater noise (std of the base's {demo.RATER} over evaluation seeds): {noise:.4f}")
    demo.RATER_NOISE = noise
    base = record["base_eval"]["0"]
    held = {seed: demo.what_happened(base, r["fine_tuned"])[1] for seed, r in runs.items()}
    for claim in demo.CLAIMS:
        print(f"{claim.name}: held on seeds {[s for s in runs if held[s][claim.name]]} of {list(runs)}")
    ratio = [r["fine_tuned"][demo.SP] / base[demo.SP] for r in runs.values()]
    print(f"SP / base SP per seed: {' '.join(f'{x:.2f}' for x in ratio)}; mean {statistics.mean(ratio):.2f}")
    print("minutes per seed: " + " ".join(f"{r['seconds'] / 60:.1f}" for r in runs.values()))


if __name__ == "__main__":
    main()
