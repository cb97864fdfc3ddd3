"""Composition RL on the DDIM base (DDPO) and on the flow base (Flow-GRPO's SDE): noise levels, the SDE window,
the coin-flip control, several seeds. Each run is `python -m minirl.tinyworld.relation_rl` (the demo's
composition task alone, L_pre on), in its own process; --jobs runs that many at once, one thread each.
Writes every run's JSON under --out and all of them together to --json (the notebook's and the README's
numbers).

    .venv/bin/python bench/composition_rl.py --jobs 2 --seeds 0,1,2 --epochs 20 --eval-samples 2  # 8-10 min a run
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
MODELS = {"ddim": ROOT / "assets" / "tinyworld" / "model", "flow": ROOT / "assets" / "tinyworld_flow" / "model"}


def grid(seeds, control_seeds):
    """(name, base, relation_rl arguments, seeds): every configuration of the experiment."""
    return [
        ("ddim", "ddim", [], seeds),
        ("ddim, coin", "ddim", ["--reward", "coin"], control_seeds),
        ("flow 0.7", "flow", ["--noise-level", "0.7"], seeds),
        ("flow 0.3", "flow", ["--noise-level", "0.3"], control_seeds),
        ("flow 1.0", "flow", ["--noise-level", "1.0"], control_seeds),
        ("flow 0.7, window 0-3", "flow", ["--noise-level", "0.7", "--sde-window", "0,3"], seeds),
        ("flow 0.7, coin", "flow", ["--noise-level", "0.7", "--reward", "coin"], control_seeds),
        # the reward spread a group's actions make: one x_T a group (DanceGRPO), with and without the window
        ("flow 0.7, shared x_1", "flow", ["--noise-level", "0.7", "--shared-noise"], seeds),
        ("flow 0.7, window 0-3, shared x_1, groups of 16", "flow",
         ["--noise-level", "0.7", "--sde-window", "0,3", "--shared-noise", "--group-size", "16"], seeds),
        ("flow 0.7, shared x_1, coin", "flow", ["--noise-level", "0.7", "--shared-noise", "--reward", "coin"],
         control_seeds),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--control-seeds", default="0", help="seeds of the noise sweep's ends and the coin control")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--eval-samples", type=int, default=4, help="seeds a prompt in each evaluation")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", help="run only the configurations whose name contains this")
    parser.add_argument("--out", default="runs/composition_rl")
    parser.add_argument("--json", default="runs/composition_rl/composition_rl.json")
    parser.add_argument("--summary", action="store_true", help="run nothing: merge and summarise the finished runs")
    args = parser.parse_args()
    seeds, control = ([int(s) for s in x.split(",")] for x in (args.seeds, args.control_seeds))
    out = Path(args.out)
    runs = []
    for name, base, extra, run_seeds in grid(seeds, control):
        if args.only and args.only not in name:
            continue
        for seed in run_seeds:
            tag = f"{name.replace(', ', '_').replace(' ', '')}_seed{seed}"
            runs.append({"name": name, "base": base, "seed": seed, "json": out / f"{tag}.json",
                         "argv": [str(MODELS[base]), *extra, "--seed", str(seed), "--epochs", str(args.epochs),
                                  "--eval-samples", str(args.eval_samples),
                                  "--out", str(out / tag), "--json", str(out / f"{tag}.json")]})
    # seed by seed, so that an interrupted grid has every configuration on its first seeds; a rerun picks up
    # where it stopped
    todo = [] if args.summary else sorted((r for r in runs if not r["json"].exists()), key=lambda r: r["seed"])
    print(f"{len(runs)} runs, {len(todo)} to do, {args.jobs} at a time", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out.mkdir(parents=True, exist_ok=True)
    running = []
    while todo or running:
        while todo and len(running) < args.jobs:
            run = todo.pop(0)
            run["log"] = open(out / f"{run['json'].stem}.log", "w")
            run["process"] = subprocess.Popen([sys.executable, "-m", "minirl.tinyworld.relation_rl", *run["argv"]],
                                              stdout=run["log"], stderr=subprocess.STDOUT, env=env, cwd=ROOT)
            run["start"] = time.perf_counter()
            running.append(run)
        time.sleep(5)
        for run in [r for r in running if r["process"].poll() is not None]:
            running.remove(run)
            run["log"].close()
            print(f"{run['name']}, seed {run['seed']}: exit code {run['process'].returncode} after "
                  f"{time.perf_counter() - run['start']:.0f} s", flush=True)
    results = []
    for run in runs:
        if run["json"].exists():
            record = json.loads(run["json"].read_text())
            results.append({"name": run["name"], "base": run["base"], "seed": run["seed"],
                            "noise_level": record["args"]["noise_level"] if run["base"] == "flow" else None,
                            "sde_window": record["args"]["sde_window"], "reward": record["args"]["reward"],
                            "shared_noise": record["args"].get("shared_noise", False),
                            "group_size": record["args"].get("group_size", 8),
                            "epochs": args.epochs, "eval_samples": args.eval_samples, "before": record["base"],
                            "after": record["tuned"],
                            "seconds_to_train": record["seconds_to_train"]})
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"command": " ".join(["bench/composition_rl.py", *sys.argv[1:]]),
                                           "runs": results}, indent=1))
    summary(results)


def summary(results):
    """Per configuration: success before -> after on each set, mean +- std over seeds."""
    import statistics
    names = list(dict.fromkeys(r["name"] for r in results))
    for name in names:
        rs = [r for r in results if r["name"] == name]
        cells = []
        for key in ("relation_train", "relation_heldout", "single"):
            gains = [r["after"][key] - r["before"][key] for r in rs]
            spread = f" +- {statistics.stdev(gains):.3f}" if len(gains) > 1 else ""
            cells.append(f"{key} {rs[0]['before'][key]:.3f} -> {statistics.mean(r['after'][key] for r in rs):.3f} "
                         f"(gain {statistics.mean(gains):+.3f}{spread})")
        print(f"{name} (seeds {[r['seed'] for r in rs]}): " + "; ".join(cells))


if __name__ == "__main__":
    main()
