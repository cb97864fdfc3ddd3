"""The tiny world's main job (`make demo`): the paper's joint multi-task RL, in miniature, on a laptop CPU.

From the committed base model, Algorithm 1 with three tasks, each a reward with its own prompts (paper 3.3):

    composition  CompositionReward (the learned detector)   relation captions of the training split
    preference   PreferenceReward (Bradley-Terry model)      every training caption
    parity       -statistical parity of the detector's colour  "a circle", "a square", "a triangle", 16 samples a
                 over each group of one prompt (paper Eq. 12)  group (a distribution reward, paper 3.2), each
                 sample credited with a leave-one-out baseline

then one L_pre step on pretraining data (rendered scenes with the data's colour bias) per iteration. The base
and the fine-tuned model are evaluated on fixed prompts with fixed seeds: `evaluate` returns the table's
numbers, `run` writes the run folder (grids, curves, samples, metrics.json).
"""

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from minirl import runlog
from minirl.tinyworld import diffusion, judges, scenes
from minirl.rewards import ParityReward, statistical_parity
from minirl.tasks import Task, seed_for
from minirl.trainer import TrainConfig, Trainer

ASSETS = Path(__file__).parents[2] / "assets" / "tinyworld"
TASKS = ("composition", "preference", "parity")
COLOURLESS = [f"a {shape}" for shape in scenes.SHAPES]           # the parity task's prompts
COLOURLESS_COUNTS = [f"two {shape}s" for shape in scenes.SHAPES]  # parity on prompts it never trained on


@dataclass
class DemoConfig:
    """The demo's run; the RL settings are `train_config`'s."""
    tasks: tuple = TASKS           # a subset trains single-task runs (the alignment tax)
    epochs: int = 10               # iterations of Algorithm 1
    lr: float = 1e-4               # AdamW, full fine-tuning
    pretrain_beta: float = 1.0     # weight of the L_pre step; 0 switches the regulariser off
    seed: int = 0
    guidance: float = 3.0
    steps: int = 10                # DDIM steps, eta 1
    out: str = "runs/demo"
    model: str = str(ASSETS / "model")
    judges: str = str(ASSETS / "judges")
    eval_samples: int = 2          # seeds per evaluation prompt


def train_config(cfg):
    """Per task and iteration: 64 samples (8 prompts x 8, or 4 x 16 for parity), 2 PPO steps of 32 samples
    over half of the 8 trainable timesteps. Full fine-tuning, as in the paper."""
    return TrainConfig(epochs=cfg.epochs, samples_per_epoch=64, sample_batch_size=32, train_batch_size=32,
                       timestep_fraction=0.5, lr=cfg.lr, clip_range=1e-2, adv_clip=5.0,
                       pretrain_beta=cfg.pretrain_beta, seed=cfg.seed, out=cfg.out, image_every=0,
                       save_every=cfg.epochs)


def make_tasks(names, detector, preference):
    tasks = {  # composition and preference: advantages within each group of 8 samples of one prompt;
               # parity: -SP of the group minus each sample's leave-one-out baseline, advantages over the batch
        "composition": Task("composition", scenes.prompt_sampler("relation"), judges.CompositionReward(detector),
                            group_size=8, advantages="group"),
        "preference": Task("preference", scenes.prompt_sampler(), judges.PreferenceReward(preference),
                           group_size=8, advantages="group"),
        "parity": Task("parity", COLOURLESS, ParityReward(detector.colour, len(scenes.COLOURS), "leave_one_out"),
                       group_size=16, advantages="batch"),
    }
    unknown = set(names) - set(tasks)
    if unknown or not names:
        raise ValueError(f"unknown tasks {sorted(unknown)}; choose one or more of {list(tasks)}")
    return [tasks[name] for name in names]


def pretrain_data(recipe=None):
    """The L_pre batch: recipe.batch_size rendered scenes of the pretraining recipe (a `diffusion.PretrainConfig`;
    default the committed model's, 32 scenes), its colour bias and flips included."""
    recipe = recipe or diffusion.PretrainConfig(batch_size=32)

    def draw(generator):
        return diffusion.pretrain_batch(random.Random(int(torch.randint(2**62, (1,), generator=generator))), recipe, 0)
    return draw


# ---------------------------------------------------------------------------------------------- evaluate

def eval_prompts(samples):
    """Fixed evaluation prompts: {set name: [(prompt, seed), ...]}, the same for every model."""
    rng = random.Random(2024)
    relation_train = rng.sample(scenes.prompts("relation", "train"), 48)
    relation_heldout = rng.sample(scenes.prompts("relation", "heldout"), 48)
    singles = [p for p in scenes.prompts("single") if p not in COLOURLESS]
    sets = {"relation_train": relation_train, "relation_heldout": relation_heldout, "single": singles * 4}
    out = {name: [(p, seed_for("eval", name, i, s)) for i, p in enumerate(prompts) for s in range(samples)]
           for name, prompts in sets.items()}
    for name, prompts in (("parity_train", COLOURLESS), ("parity_heldout", COLOURLESS_COUNTS)):
        out[name] = [(p, seed_for("eval", name, p, i)) for p in prompts for i in range(16 * samples)]
    return out


@torch.no_grad()
def generate(policy, pairs, batch_size=64):
    """Images (N, 3, 16, 16) for (prompt, seed) pairs; each image depends on its seed only."""
    images = []
    for b in range(0, len(pairs), batch_size):
        prompts, seeds = zip(*pairs[b:b + batch_size])
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        images.append(policy.decode(policy.rollout(list(prompts), generators).latents[:, -1]))
    return torch.cat(images)


@torch.no_grad()
def evaluate(policy, detector, preference, samples=2):
    """The table's numbers for one model: returns (metrics, {set name: images})."""
    sets = eval_prompts(samples)
    images = {name: generate(policy, pairs) for name, pairs in sets.items()}
    composition = judges.CompositionReward(detector)
    metrics = {}
    for name in ("relation_train", "relation_heldout", "single"):
        prompts = [p for p, _ in sets[name]]
        reward, info = composition(images[name], prompts, [{}] * len(prompts))
        metrics[f"composition/{name}/success"] = info["success"]
        metrics[f"composition/{name}/objects"] = info["objects"]  # the named objects, wherever they are
        metrics[f"composition/{name}/reward"] = reward.mean().item()
        metrics[f"preference/{name}/reward"] = preference(images[name]).mean().item()
        metrics[f"preference/{name}/rater"] = judges.rater_utility(images[name]).mean().item()
    for name in ("parity_train", "parity_heldout"):
        colours = detector.colour(images[name]).view(-1, 16)  # (groups, 16): groups of one prompt
        metrics[f"parity/{name}/statistical_parity"] = torch.stack(
            [statistical_parity(g, len(scenes.COLOURS)) for g in colours]).mean().item()
        shares = torch.bincount(colours.flatten(), minlength=len(scenes.COLOURS)) / colours.numel()
        for colour, share in zip(scenes.COLOURS, shares.tolist()):  # SP alone hides a swing from red to green
            metrics[f"parity/{name}/{colour}_share"] = share
        metrics[f"parity/{name}/blank_share"] = sum(c is None for c in scenes.dominant_colour(images[name])) \
            / len(images[name])
        prompts = [p for p, _ in sets[name]]  # still one object of one colour (two-coloured blends fool h(x))
        metrics[f"parity/{name}/success"] = composition(images[name], prompts, [{}] * len(prompts))[1]["success"]
    return metrics, images


# ------------------------------------------------------------------------------------------------- run

ROWS = [  # (metric, what it is, which way is better)
    ("composition/relation_train/success", "composition success, training relations", +1),
    ("composition/relation_heldout/success", "composition success, held-out relations", +1),
    ("composition/relation_train/objects", "the named objects, any places, training relations", +1),
    ("composition/relation_heldout/objects", "the named objects, any places, held-out relations", +1),
    ("composition/single/success", "composition success, single objects", +1),
    ("preference/relation_train/reward", "preference reward, training relations", +1),
    ("preference/relation_heldout/reward", "preference reward, held-out relations", +1),
    ("preference/single/reward", "preference reward, single objects", +1),
    ("preference/single/rater", "the rater's own taste, single objects", +1),
    ("parity/parity_train/statistical_parity", "statistical parity, 'a circle' etc. (trained)", -1),
    ("parity/parity_heldout/statistical_parity", "statistical parity, 'two circles' etc. (held out)", -1),
    ("parity/parity_train/red_share", "red share, 'a circle' etc.", -1),
    ("parity/parity_train/blank_share", "blank images, 'a circle' etc.", -1),
    ("parity/parity_train/success", "composition success, 'a circle' etc.", +1),
]


def table(base, tuned):
    lines = [f"| {'metric':<52} | {'base':>7} | {'RL':>7} |", f"|{'-' * 54}|{'-' * 9}|{'-' * 9}|"]
    lines += [f"| {label:<52} | {base[key]:>7.3f} | {tuned[key]:>7.3f} |" for key, label, _ in ROWS]
    return "\n".join(lines)


def targets(base, tuned):
    """The issue's bar for the demo: {what: met}."""
    b, t = base, tuned
    return {
        "colour parity at most a third of the base's":
            t["parity/parity_train/statistical_parity"] <= b["parity/parity_train/statistical_parity"] / 3,
        "held-out composition success up by at least 20 points":
            t["composition/relation_heldout/success"] >= b["composition/relation_heldout/success"] + 0.2,
        "preference reward up": t["preference/relation_train/reward"] > b["preference/relation_train/reward"],
        "the rater's own taste not worse (no hacking)": t["preference/single/rater"] >= b["preference/single/rater"],
        "single-object success within 5 points of the base":
            t["composition/single/success"] >= b["composition/single/success"] - 0.05,
    }


def run(cfg, log=print, base=None):
    """Evaluate the base, fine-tune (Algorithm 1), evaluate again, write the run folder; return metrics.
    base: the base model's (metrics, images) from an earlier run with the same evaluation, to skip that step."""
    out = Path(cfg.out)
    detector, preference = judges.load(cfg.judges)
    tasks = make_tasks(list(cfg.tasks), detector, preference)
    policy = diffusion.load_policy(cfg.model, num_steps=cfg.steps, guidance_scale=cfg.guidance)
    if base is None:
        log("evaluating the base model ...")
        base = evaluate(policy, detector, preference, cfg.eval_samples)
    base, before = base
    policy.unet.requires_grad_(True)  # full fine-tuning, as in the paper
    trainer = Trainer(policy, tasks, train_config(cfg), pretrain_data=pretrain_data(),
                      run_info={"demo": asdict(cfg)})
    trainer.train()
    log("evaluating the fine-tuned model ...")
    tuned, after = evaluate(policy, detector, preference, cfg.eval_samples)
    met = targets(base, tuned)
    result = {"config": asdict(cfg), "base": base, "fine_tuned": tuned, "targets": met, "base_images": before}
    (out / "metrics.json").write_text(json.dumps({k: v for k, v in result.items() if k != "base_images"}, indent=1))
    write_samples(out, before, after, eval_prompts(cfg.eval_samples))
    runlog.plot_reward_curves(out)
    log(table(base, tuned))
    log("colours of 'a circle' etc., base -> RL: " + ", ".join(
        f"{c} {base[f'parity/parity_train/{c}_share']:.0%} -> {tuned[f'parity/parity_train/{c}_share']:.0%}"
        for c in scenes.COLOURS))
    for what, ok in met.items():
        log(f"  [{'x' if ok else ' '}] {what}")
    log(f"written to {out}/: before_after.png, reward_curves.png, metrics.json, samples/ (index.json)")
    return result


def write_samples(out, before, after, sets):
    """Every evaluation image as a PNG, an index of prompts and seeds, and a before/after grid."""
    from torchvision.utils import save_image
    index = []
    for stage, images in (("before", before), ("after", after)):
        folder = out / "samples" / stage
        folder.mkdir(parents=True, exist_ok=True)
        for name, pairs in sets.items():
            for i, ((prompt, seed), image) in enumerate(zip(pairs, images[name])):
                path = folder / f"{name}_{i:03d}.png"
                save_image(image, path)
                index.append({"stage": stage, "set": name, "prompt": prompt, "seed": seed,
                              "file": str(path.relative_to(out))})
    (out / "samples" / "index.json").write_text(json.dumps(index, indent=1))
    samples = len(sets["relation_train"]) // 48  # 12 images a row, the same prompts and seeds before and after:
    picks = {name: range(0, 12 * samples, samples) for name in ("single", "relation_train", "relation_heldout")}
    picks["parity_train"] = range(0, len(sets["parity_train"]), len(sets["parity_train"]) // 12)  # 4 a prompt
    rows = [images[name][list(idx)] for images in (before, after) for name, idx in picks.items()]
    save_image(torch.cat(rows), out / "before_after.png", nrow=12, padding=1, pad_value=1.0)
    (out / "before_after.json").write_text(json.dumps({
        "rows": [f"{stage}: {name}" for stage in ("before", "after") for name in picks],
        "prompts": {name: [sets[name][i][0] for i in idx] for name, idx in picks.items()}}, indent=1))


# --------------------------------------------------------------------------------------- alignment tax

HEADLINE = {  # one number a reward, measured on its own task's prompts
    "composition": ("composition/relation_train/success", +1),
    "preference": ("preference/single/reward", +1),
    "parity": ("parity/parity_train/statistical_parity", -1),
}


def alignment_tax(seeds, epochs, out, log=print):
    """The joint run and each single-task run for every seed; a table of each reward's gain over the base
    (mean and spread over seeds) and the share of each single-task gain the joint model keeps."""
    out = Path(out)
    runs = {"joint": TASKS, **{f"{t} only": (t,) for t in TASKS}}
    gains = {name: {t: [] for t in TASKS} for name in runs}
    base = None
    for seed in seeds:
        for name, tasks in runs.items():
            cfg = DemoConfig(tasks=tasks, epochs=epochs, seed=seed, out=str(out / f"{name.split()[0]}_seed{seed}"))
            result = run(cfg, log, base)
            base = result["base"], result["base_images"]
            for t, (key, sign) in HEADLINE.items():
                gains[name][t].append(sign * (result["fine_tuned"][key] - result["base"][key]))
    report = tax_report(gains, seeds, epochs)
    (out / "alignment_tax.md").write_text(report + "\n")
    (out / "alignment_tax.json").write_text(json.dumps({"seeds": seeds, "epochs": epochs, "gains": gains,
                                                        "headline": HEADLINE, "base": base[0]}, indent=1))
    log(report)
    return gains


def tax_report(gains, seeds, epochs):
    """The alignment-tax table (markdown) from gains = {run: {task: [gain per seed]}}."""
    stats = {name: {t: (float(torch.tensor(g).mean()), float(torch.tensor(g).std()) if len(g) > 1 else 0.0)
                    for t, g in by_task.items()} for name, by_task in gains.items()}
    kept = {t: kept_share(gains["joint"][t], gains[f"{t} only"][t]) for t in TASKS}
    lines = [f"gain over the base model on each reward (mean +- std over seeds {seeds}; {epochs} iterations)",
             "| run | " + " | ".join(f"{t} ({HEADLINE[t][0].split('/')[-1]})" for t in TASKS) + " |",
             "|---|" + "---|" * len(TASKS)]
    lines += [f"| {name} | " + " | ".join(f"{m:+.3f} +- {sd:.3f}" for m, sd in by_task.values()) + " |"
              for name, by_task in stats.items()]
    percent = lambda x: "n/a" if x is None else f"{100 * x:.0f}%"  # noqa: E731
    shares = [f"{percent(mean)} (per seed {', '.join(map(percent, per_seed))})" for per_seed, mean in kept.values()]
    lines.append("| joint keeps of the single-task gain (n/a: the single-task run did not gain) | "
                 + " | ".join(shares) + " |")
    return "\n".join(lines)


def kept_share(joint_gains, single_gains):
    """The share of a single-task gain the joint model keeps, joint gain / single-task gain, for each seed
    (lists of gains over the base on one reward, one per seed), and its mean over seeds. A share exists only
    where the single-task run gained (None for a seed where it did not; the mean is None if no seed did)."""
    if len(joint_gains) != len(single_gains) or not joint_gains:
        raise ValueError(f"need one joint and one single-task gain per seed; got {len(joint_gains)} and "
                         f"{len(single_gains)}")
    shares = [j / s if s > 0 else None for j, s in zip(joint_gains, single_gains)]
    defined = [x for x in shares if x is not None]
    return shares, sum(defined) / len(defined) if defined else None
