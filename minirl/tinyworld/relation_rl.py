"""Does composition RL teach relation order, or colour binding? Composition success before and after the demo's
composition task, trained alone, on a DDIM or a flow-matching base.

    .venv/bin/python -m minirl.tinyworld.relation_rl MODEL [--epochs 20] [--lr 1e-4] [--seed 0] [--flip 0.5]
        [--first-steps 3] [--samples 256] [--timestep-spacing trailing] [--guidance 3] [--relations "left of"]
        [--split heldout] [--reward objects|coin] [--pretrain-beta 0] [--noise-level 0.7] [--sde-window 0,3]
        [--shared-noise] [--group-size 8] [--eval-samples 4] [--per-relation] [--out DIR] [--json FILE]
        # 5 min for 20 iterations of 64 samples
    minirl composition-rl [--seed N] [--reward coin] [--tasks composition,preference,parity] [--out DIR]
        # the same, with EXPERIMENT's defaults: the partial-order base; DIR/result.json
    minirl composition-rl --guidance-sweep 1,2,3       # the base over guidance: DIR/guidance.json
    minirl composition-rl --alignment-tax 0,1,2 --epochs 40   # the three tasks jointly and each alone, each seed

The demo's RL settings (`minirl.tinyworld.demo.train_config`: 64 samples an iteration, PPO, full fine-tuning)
on half of the trainable steps of each chain, in groups of --group-size samples of one prompt, with the L_pre
step on the model's pretraining data: scenes mirrored left-right with probability --flip, as `minirl pretrain
--flip` made them (0 for the committed model).
--first-steps K trains only the K noisiest steps, every chain, where layouts are decided; --samples sets
the samples an iteration; --timestep-spacing overrides a DDIM model's (`diffusion.load_policy`); --guidance is
the sampler's classifier-free guidance; --relations trains and evaluates on captions of these relation words
only; --split trains on the held-out relation captions instead (what RL can do for a prompt it trains on);
--reward objects credits the named objects wherever they are (the detector's hard verdict), not the relation;
--reward coin is the control, 0 or 1 at random whatever the image (what the updates do with no signal);
--pretrain-beta weighs the L_pre step (0: off). A flow model (`minirl pretrain --objective flow`) samples with
Flow-GRPO's SDE at --noise-level; --sde-window START,STOP puts that noise on steps START..STOP-1 only, the ODE
elsewhere (MixGRPO's window), and trains every step of the window. --shared-noise starts every chain of a group
from one x_T (DanceGRPO), so that what tells a group's samples apart is the sampler's noise, the policy's
actions. Prints composition success on the evaluation prompts (training relations, held-out relations, single
objects; --eval-samples seeds a prompt) before and after, sampled as the policy samples, with the preference
reward of single objects and the statistical parity of 'a circle' etc.; --tasks trains the demo's preference and
parity tasks beside composition (or instead of it: Algorithm 1, `demo.make_tasks`); --per-relation also
each relation word's success and the share of images with the named objects (`diagnose.relation_rates`);
--json writes them.
"""

import argparse
import json
import random
import time
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from minirl import checkpoint
from minirl.tasks import seed_for
from minirl.tinyworld import demo, diffusion, judges, scenes
from minirl.tinyworld.diagnose import relation_rates
from minirl.trainer import Trainer


class ObjectsReward:
    """1 where the detector finds exactly the named objects, wherever they are; else 0."""

    def __init__(self, detector):
        self.detector = detector

    def __call__(self, images, prompts, metadata):
        _, success, objects = judges.verdicts(self.detector, images, prompts)
        return objects.float(), {"success": success.float().mean().item(), "objects": objects.float().mean().item()}


class CoinReward:
    """The control: 0 or 1 at random, whatever the image."""

    def __init__(self, seed=0):
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, images, prompts, metadata):
        return torch.randint(0, 2, (len(images),), generator=self.generator).float(), {}


SETS = ("relation_train", "relation_heldout", "single", "parity_train")
# `minirl composition-rl`'s defaults: composition RL where the base partly knows order (docs/research.md, 3.6).
# The --flip 0.25 base gets "left of" / "right of" right about 3 times in 4; trailing spacing makes the first
# step's noise, an action, pick the layout; guidance 1 leaves the partial skill unsharpened. No L_pre: its data
# holds the flips, so it pulls the model back to the base's 3 in 4 (and dominates Adam's step sizes).
EXPERIMENT = {"model": str(demo.ASSETS / "partial_order" / "model"), "flip": 0.25, "timestep_spacing": "trailing",
              "guidance": 1.0, "relations": "left of,right of", "epochs": 80, "pretrain_beta": 0.0,
              "out": "runs/composition-rl"}
RESULT = {"relation_train": "train_success", "relation_heldout": "heldout_success", "single": "single_success",
          "preference": "preference_reward", "statistical_parity": "statistical_parity"}
# the alignment tax's number for each task (demo.HEADLINE's, on this experiment's captions): report's key, sign
HEADLINE = {"composition": ("relation_train", +1), "preference": ("preference", +1),
            "parity": ("statistical_parity", -1)}


def captions(split, relations):
    """The split's relation captions whose relation word is one of `relations`."""
    return [c for c in scenes.prompts("relation", split) if scenes.parse(c)["relation"] in relations]


def eval_sets(samples, relations=None):
    """The evaluation's (prompt, seed) pairs: the demo's (`demo.eval_prompts`), or with `relations` (a tuple of
    relation words) 48 captions of those relations from each split, drawn and seeded alike."""
    sets = demo.eval_prompts(samples)
    if relations is None:
        return {name: sets[name] for name in SETS}
    rng = random.Random(2024)
    for split in scenes.SPLITS:
        name, drawn = f"relation_{split}", rng.sample(captions(split, relations), 48)
        sets[name] = [(c, seed_for("eval", name, i, s)) for i, c in enumerate(drawn) for s in range(samples)]
    return {name: sets[name] for name in SETS}


def report(stage, policy, detector, preference, per_relation=False, samples=4, relations=None):
    """The three tasks' numbers on the evaluation sets (`eval_sets`), `samples` seeds a prompt: composition success
    on the relation captions and single objects, the preference reward on single objects, the statistical parity
    of 'a circle' etc. (and {split: rates} per relation). Returns (result, {set: images})."""
    composition = judges.CompositionReward(detector)
    sets = eval_sets(samples, relations)
    images = {name: demo.generate(policy, pairs) for name, pairs in sets.items()}
    result = {name: composition(images[name], [p for p, _ in sets[name]], [{}] * len(sets[name]))[1]["success"]
              for name in SETS[:3]}
    result["preference"] = preference(images["single"]).mean().item()
    result["statistical_parity"] = demo.mean_parity(detector.colour(images["parity_train"]).view(-1, 16))
    print(f"{stage}: composition success " + ", ".join(f"{k} {result[k]:.3f}" for k in SETS[:3])
          + f"; preference {result['preference']:.2f}; statistical parity {result['statistical_parity']:.3f}",
          flush=True)
    if per_relation:
        for split in scenes.SPLITS:
            rates = relation_rates(policy, detector, split)
            success = {r: v["success"] for r, v in rates.items()}
            objects = sum(v["objects"] for v in rates.values()) / len(rates)
            result[f"per_relation_{split}"] = rates
            print(f"{stage}, {split}: success {success}, mean {sum(success.values()) / len(success):.3f}, "
                  f"named objects {objects:.3f}", flush=True)
    return result, images


def add_arguments(parser, **defaults):
    """The experiment's options, on `parser`, with `defaults` (EXPERIMENT for `minirl composition-rl`) in place of
    the demo's settings on the committed base."""
    def option(name, **kwargs):
        dest = name.lstrip("-").replace("-", "_")
        parser.add_argument(name, **{**kwargs, "default": defaults.get(dest, kwargs.get("default"))})
    option("--tasks", default="composition", help=f"comma-separated tasks trained together, of {','.join(demo.TASKS)}")
    option("--epochs", type=int, default=20, help="RL iterations")
    option("--lr", type=float, default=1e-4, help="AdamW learning rate, full fine-tuning")
    option("--flip", type=float, default=0.0, help="L_pre's scenes mirrored left-right: the base's --flip")
    option("--first-steps", type=int, default=0, help="train only the K noisiest steps (0: the demo's random half)")
    option("--samples", type=int, default=64, help="samples an iteration")
    option("--timestep-spacing", choices=diffusion.TIMESTEP_SPACINGS, help="DDIM's spacing (none: the model's)")
    option("--guidance", type=float, default=3.0, help="classifier-free guidance (1: none)")
    option("--relations", help="comma-separated relation words to train and evaluate on (none: all)")
    option("--split", choices=scenes.SPLITS, default="train", help="the relation captions RL trains on")
    option("--reward", choices=("composition", "objects", "coin"), default="composition",
           help="coin: the control, 0 or 1 at random")
    option("--pretrain-beta", type=float, default=1.0, help="weight of the L_pre step (0: off)")
    option("--seed", type=int, default=0, help="the run's seed")
    option("--noise-level", type=float, default=0.7, help="a flow model's SDE noise (Flow-GRPO: 0.7)")
    option("--sde-window", help="START,STOP: a flow model's SDE on these steps only, the ODE elsewhere")
    option("--shared-noise", action="store_true", default=False, help="one x_T a group (DanceGRPO)")
    option("--group-size", type=int, default=8, help="samples a prompt (group-relative advantages)")
    option("--eval-samples", type=int, default=4, help="seeds a prompt in the evaluation")
    option("--per-relation", action="store_true", default=False, help="also each relation word's success (slower)")
    option("--out", default="runs/relation_rl", help="the run folder (metrics, checkpoint)")


def relation_words(spec):
    """'left of,right of' -> ('left of', 'right of'); None -> None (every relation)."""
    if spec is None:
        return None
    words = tuple(w.strip() for w in spec.split(","))
    unknown = [w for w in words if w not in scenes.RELATIONS]
    if unknown or not words:
        raise ValueError(f"unknown relations {unknown} in {spec!r}; valid: comma-separated {list(scenes.RELATIONS)}")
    return words


def settings(args):
    """The parsed arguments as JSON can hold them (not the command's function)."""
    return {k: v for k, v in vars(args).items() if not callable(v)}


def load(args):
    """The judges (detector, preference model) and the policy as the experiment samples it."""
    window = None if args.sde_window is None else tuple(int(i) for i in args.sde_window.split(","))
    policy = diffusion.load_policy(args.model, args.timestep_spacing, num_steps=10, guidance_scale=args.guidance,
                                   noise_level=args.noise_level, sde_window=window)
    return (*judges.load(demo.ASSETS / "judges"), policy)


def make_tasks(args, detector, preference, relations):
    """The tasks of --tasks: composition on the experiment's captions (--split, --relations, --group-size; --reward
    swaps its reward), preference and parity as `minirl demo` has them (parity weighs 2, on soft colour shares)."""
    tasks = demo.make_tasks(args.tasks.split(","), detector, preference, demo.DemoConfig.parity_weight,
                            demo.DemoConfig.parity_soft)
    prompts = captions(args.split, relations) if relations else scenes.prompt_sampler("relation", args.split)
    reward = {"objects": ObjectsReward(detector), "coin": CoinReward(args.seed)}.get(args.reward)
    return [replace(t, prompts=prompts, group_size=args.group_size, reward=reward or t.reward)
            if t.name == "composition" else t for t in tasks]


def run(args, base=None):
    """The tasks of --tasks (composition alone by default) evaluated before and after: {"args", "base", "tuned",
    "seconds_to_train", "base_images", "images"}. base: (result, images) of the base's `report` with the same
    evaluation, to skip that step."""
    relations = relation_words(args.relations)
    if args.samples < 1 or args.samples % 32:
        raise ValueError(f"--samples is {args.samples}; give a multiple of 32 (the demo's batches of 32 samples)")
    detector, preference, policy = load(args)
    tasks = make_tasks(args, detector, preference, relations)
    cfg = demo.DemoConfig(epochs=args.epochs, lr=args.lr, pretrain_beta=args.pretrain_beta, seed=args.seed,
                          out=args.out)
    config = replace(demo.train_config(cfg), samples_per_epoch=args.samples, timestep_fraction=0.5,
                     shared_noise=args.shared_noise)
    if args.first_steps:
        policy.trainable_steps = policy.trainable_steps[:args.first_steps]
    if args.first_steps or policy.sde_window:
        config = replace(config, timestep_fraction=1.0)
    recipe = diffusion.PretrainConfig(batch_size=32, flip=args.flip)  # L_pre's data: the base's recipe
    config.check(num_processes=1, num_tasks=len(tasks))  # bad settings refused before the base's evaluation
    recipe.check()
    base, before = base or report("base", policy, detector, preference, args.per_relation, args.eval_samples,
                                  relations)
    policy.unet.requires_grad_(True)
    start = time.perf_counter()
    Trainer(policy, tasks, config, pretrain_data=demo.pretrain_data(recipe)).train()
    seconds = time.perf_counter() - start
    tuned, after = report(f"after {args.epochs} iterations", policy, detector, preference, args.per_relation,
                          args.eval_samples, relations)
    return {"args": settings(args), "base": base, "tuned": tuned, "seconds_to_train": seconds,
            "base_images": before, "images": after}


def guidance_sweep(args, scales):
    """The base's success at each guidance scale, sampled as the experiment samples, written to
    OUT/guidance.json: {scale: {set: success}}."""
    relations = relation_words(args.relations)
    detector, preference, policy = load(args)
    sweep = {}
    for scale in scales:
        policy.guidance_scale = scale
        sweep[f"{scale:g}"] = report(f"guidance {scale:g}", policy, detector, preference,
                                     samples=args.eval_samples, relations=relations)[0]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    checkpoint.write_text(Path(args.out) / "guidance.json",
                          json.dumps({"args": settings(args), "sweep": sweep}, indent=1))
    print(f"written to {Path(args.out) / 'guidance.json'}")
    return sweep


def experiment(args):
    """`minirl composition-rl`: `run`, then OUT/result.json with the base's and the tuned model's numbers ("base"
    and "rl") under RESULT's names (train_success, heldout_success, single_success, preference_reward,
    statistical_parity), printed as a table."""
    result = run(args)
    named = {stage: {RESULT[k]: v for k, v in result[key].items() if k in RESULT}
             for stage, key in (("base", "base"), ("rl", "tuned"))}
    checkpoint.write_text(Path(args.out) / "result.json", json.dumps(
        {"args": result["args"], **named, "seconds_to_train": result["seconds_to_train"]}, indent=1))
    print(f"{'':5}" + "".join(f"{name:>19}" for name in RESULT.values()))
    for stage, entry in named.items():
        print(f"{stage:5}" + "".join(f"{entry[name]:19.3f}" for name in RESULT.values()))
    print(f"written to {Path(args.out) / 'result.json'}")
    return named


def alignment_tax(args, seeds):
    """The three tasks trained jointly, and each alone, on each seed, in this experiment's setting (the base is
    evaluated once). Writes OUT/alignment_tax.md (`demo.tax_report`'s table of each task's gain, HEADLINE), and
    OUT/alignment_tax.json (every run's numbers, base and tuned) and OUT/samples.safetensors (the base's and the
    first seed's joint model's evaluation images, uint8). Returns {run: {task: [gain per seed]}}."""
    out = Path(args.out)
    runs = {"joint": demo.TASKS, **{f"{t} only": (t,) for t in demo.TASKS}}
    gains = {name: {t: [] for t in demo.TASKS} for name in runs}
    tuned, base, images = {}, None, {}
    for seed in seeds:
        for name, tasks in runs.items():
            result = run(argparse.Namespace(**{**vars(args), "seed": seed, "tasks": ",".join(tasks),
                                               "out": str(out / f"{name.split()[0]}_seed{seed}")}), base)
            base = result["base"], result["base_images"]
            tuned.setdefault(name, {})[str(seed)] = result["tuned"]
            for task, (key, sign) in HEADLINE.items():
                gains[name][task].append(sign * (result["tuned"][key] - result["base"][key]))
            if not images and name == "joint":
                images = {f"{stage}/{s}": (x * 255).round().to(torch.uint8) for stage, by_set in
                          (("base", result["base_images"]), ("joint", result["images"])) for s, x in by_set.items()}
    table = demo.tax_report(gains, seeds, args.epochs)
    save_file(images, out / "samples.safetensors")
    checkpoint.write_text(out / "alignment_tax.json", json.dumps(
        {"args": settings(args), "seeds": seeds, "headline": HEADLINE, "base": base[0], "tuned": tuned,
         "gains": gains}, indent=1))
    checkpoint.write_text(out / "alignment_tax.md", table + "\n")
    print(table)
    return gains


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minirl.tinyworld.relation_rl", description=__doc__.split("\n")[0])
    parser.add_argument("model")
    add_arguments(parser)
    parser.add_argument("--json", help="write the arguments, the successes before and after and the seconds here")
    args = parser.parse_args(argv)
    result = run(args)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({k: v for k, v in result.items() if "images" not in k}, indent=1))


if __name__ == "__main__":
    main()
