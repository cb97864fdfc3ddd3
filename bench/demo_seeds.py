"""The demo on several seeds: the numbers behind its claims and the README table (mean +- std over seeds).

Runs `minirl demo`'s joint run once a seed, one after the other, with the base model evaluated once and shared
(as `demo.alignment_tax` does), and the base evaluated again with other evaluation seeds: that spread is the
noise of one evaluation, the yardstick for "did not fall". Writes every seed's metrics to --json.

    .venv/bin/python bench/demo_seeds.py --seeds 0,1,2,3,4 --eval-seeds 1,2,3,4   # 4-5 min a seed, 2 idle cores
    .venv/bin/python bench/demo_seeds.py --summary [--base-evals-from EARLIER.json]

Run it with the thread count `make demo` runs with (torch's default: the machine's cores): another count sums
in another order, and a run takes another path from the same seed.
"""

import argparse
import json
import statistics
import time
from dataclasses import asdict, fields
from pathlib import Path

import torch
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
    parser.add_argument("--parity-hard", dest="parity_soft", action="store_false",
                        help="the parity task's hard colour labels (the detector's argmax), as before its soft shares")
    parser.add_argument("--base-evals-from", help="with --summary: take the base's evaluations from this earlier "
                        "record too (the same model and evaluation; its spread over evaluation seeds)")
    parser.add_argument("--summary", action="store_true", help="only print the tables of an existing --json")
    args = parser.parse_args()
    if args.summary:
        record = json.loads(Path(args.json).read_text())
        if args.base_evals_from:
            earlier = json.loads(Path(args.base_evals_from).read_text())["base_eval"]
            if earlier["0"] != record["base_eval"]["0"]:
                raise SystemExit(f"{args.base_evals_from} evaluated another base (its evaluation seed 0 differs)")
            record["base_eval"] = {**earlier, **record["base_eval"]}
        return summary(record)
    seeds = [int(s) for s in args.seeds.split(",")]
    settings = {k: getattr(args, k) for k in ("epochs", "pretrain_beta", "parity_weight", "parity_soft", "lr",
                                              "eval_samples")}
    defined = {k: v for k, v in asdict(demo.DemoConfig(**settings)).items()  # the setting, not where things are
               if k not in ("seed", "out", "model", "judges", "base_samples")}
    record = {"settings": {**defined, "torch_threads": torch.get_num_threads()},
              "seeds": seeds, "runs": {}, "base_eval": {}}
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


README_ROWS = [  # (metric, its name in the README's table)
    ("composition/relation_heldout/success", "composition success, held-out relations (not trained; see below)"),
    ("composition/single/success", "composition success, single objects"),
    ("preference/relation_train/reward", "preference reward, training relations"),
    ("preference/single/rater", "the simulated rater's own utility, single objects"),
    ("parity/parity_train/statistical_parity",
     'colour parity (statistical parity of "a circle" etc., lower is fairer)'),
    ("parity/parity_heldout/statistical_parity", 'colour parity on prompts never trained on ("two circles" etc.)'),
]


def summary(record):
    """Every metric's table and the README's (markdown): base over evaluation seeds, RL over training seeds,
    mean +- std; and which of the demo's claims held on every seed, with the rater's noise taken from the
    base's evaluations."""
    ms = lambda xs: f"{statistics.mean(xs):.3f} +- {statistics.stdev(xs) if len(xs) > 1 else 0:.3f}"  # noqa: E731
    runs = record["runs"]
    every = ((k, label) for k, label, _ in demo.ROWS)
    for rows, head in ((every, "| metric | base (eval seeds {}) | RL (seeds {}) |"),
                       (README_ROWS, "| reward | base (mean +- std over evaluation seeds {}) | after "
                        f"{record['settings']['epochs']} iterations (mean +- std over training seeds {{}}) |")):
        lines = [head.format(", ".join(record["base_eval"]), ", ".join(runs)), "|---|---|---|"]
        lines += [f"| {label} | {ms([m[key] for m in record['base_eval'].values()])} | "
                  f"{ms([r['fine_tuned'][key] for r in runs.values()])} |" for key, label in rows]
        print("\n".join(lines) + "\n")
    noise = statistics.stdev([m[demo.RATER] for m in record["base_eval"].values()]) \
        if len(record["base_eval"]) > 1 else 0.0
    print(f"rater noise (std of the base's {demo.RATER} over evaluation seeds): {noise:.4f} "
          f"(the claim uses demo.RATER_NOISE = {demo.RATER_NOISE})")
    base = record["base_eval"]["0"]
    for claim in demo.CLAIMS:
        print(f"{claim.name}: held on seeds {[s for s, r in runs.items() if claim.holds(base, r['fine_tuned'])]} "
              f"of {list(runs)}")
    print(f"printed as claims (held on every seed): {sorted(demo.held_on_seeds(record))}")
    ratio = [r["fine_tuned"][demo.SP] / base[demo.SP] for r in runs.values()]
    print(f"SP / base SP per seed: {' '.join(f'{x:.2f}' for x in ratio)}; mean {statistics.mean(ratio):.2f}")
    print("minutes per seed: " + " ".join(f"{r['seconds'] / 60:.1f}" for r in runs.values()))


if __name__ == "__main__":
    main()
