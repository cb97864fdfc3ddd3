"""The tiny world's main job (`make demo`): the paper's joint multi-task RL, in miniature, on a laptop CPU.

From the committed base model, Algorithm 1 with tasks, each a reward with its own prompts (paper 3.3):

    composition  CompositionReward (the learned detector)   relation captions of the training split
    preference   PreferenceReward (Bradley-Terry model)      every training caption
    parity       -statistical parity of the detector's colour  "a circle", "a square", "a triangle", 16 samples a
                 over each group of one prompt (paper Eq. 12)  group (a distribution reward, paper 3.2), each
                 sample credited with a leave-one-out baseline

then one L_pre step on pretraining data (rendered scenes with the data's colour bias) per iteration; the parity
loss weighs twice the others' (`make_tasks`). `make demo` trains preference and parity: composition does not
learn in the tiny world (notebook 07 trains all three) and would cost a third of the demo's time. The base and
the fine-tuned model are evaluated on fixed prompts with fixed seeds: `evaluate` returns the table's numbers
(the base's images are sampled once, `sample_base`), `run` writes the run folder (grids, curves, samples,
metrics.json).
"""

import hashlib
import json
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

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
    tasks: tuple = ("preference", "parity")  # of TASKS; notebook 07 trains all three and each alone
    epochs: int = 10               # iterations of Algorithm 1
    lr: float = 1e-4               # AdamW, full fine-tuning
    pretrain_beta: float = 1.0     # weight of the L_pre step; 0 switches the regulariser off
    parity_weight: float = 2.0     # weight of the parity task's loss (the others': 1); see make_tasks
    parity_soft: bool = True       # parity's h(x): the detector's colour shares, not its argmax (make_tasks)
    seed: int = 0
    guidance: float = 3.0
    steps: int = 10                # DDIM steps, eta 1
    out: str = "runs/demo"
    model: str = str(ASSETS / "model")
    judges: str = str(ASSETS / "judges")
    eval_samples: int = 2          # seeds per evaluation prompt
    base_samples: str = str(ASSETS / "base_samples.safetensors")  # the base's evaluation images, sampled once


def train_config(cfg):
    """Per task and iteration: 64 samples (8 prompts x 8, or 4 x 16 for parity), 2 PPO steps of 32 samples
    over half of the 8 trainable timesteps. Full fine-tuning, as in the paper."""
    return TrainConfig(epochs=cfg.epochs, samples_per_epoch=64, sample_batch_size=32, train_batch_size=32,
                       timestep_fraction=0.5, lr=cfg.lr, clip_range=1e-2, adv_clip=5.0,
                       pretrain_beta=cfg.pretrain_beta, seed=cfg.seed, out=cfg.out, image_every=0,
                       save_every=cfg.epochs)


def make_tasks(names, detector, preference, parity_weight=1.0, parity_soft=False):
    """The demo's tasks by name. parity_weight multiplies the parity loss (1: every task alike, as in the paper's
    Algorithm 1; `DemoConfig`, so `minirl demo` and notebook 07's runs: 2). Adam divides every step by a running
    size of the gradients, which the L_pre step's (about 20 times the tasks') dominates, so a weight of 2 doubles
    the parity task's steps beside the other tasks' and beside L_pre's pull back to the data's red
    (docs/research.md, section 2, measures it over seeds 0-4). parity_soft: the parity reward reads the
    detector's colour shares (`colour_shares`, soft SP) instead of its hard labels (`colour`, the paper's): a
    group of one colour then still ranks its samples by how much of that colour they show, where every hard
    leave-one-out credit is 0 and the task is stuck (`DemoConfig` and `minirl demo`: soft; research.md,
    section 2)."""
    tasks = {  # composition and preference: advantages within each group of 8 samples of one prompt;
               # parity: -SP of the group minus each sample's leave-one-out baseline, advantages over the batch
        "composition": Task("composition", scenes.prompt_sampler("relation"), judges.CompositionReward(detector),
                            group_size=8, advantages="group"),
        "preference": Task("preference", scenes.prompt_sampler(), judges.PreferenceReward(preference),
                           group_size=8, advantages="group"),
        "parity": Task("parity", COLOURLESS,
                       ParityReward(detector.colour_shares if parity_soft else detector.colour, len(scenes.COLOURS),
                                    "leave_one_out", soft=parity_soft),
                       group_size=16, advantages="batch", weight=parity_weight),
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

def eval_prompts(samples, eval_seed=0):
    """Fixed evaluation prompts: {set name: [(prompt, seed), ...]}, the same for every model. eval_seed != 0
    draws other noise seeds for the same prompts (the spread of an evaluation, as bench/demo_seeds.py measures)."""
    rng = random.Random(2024)
    tag = ("eval",) if eval_seed == 0 else ("eval", eval_seed)
    relation_train = rng.sample(scenes.prompts("relation", "train"), 48)
    relation_heldout = rng.sample(scenes.prompts("relation", "heldout"), 48)
    singles = [p for p in scenes.prompts("single") if p not in COLOURLESS]
    sets = {"relation_train": relation_train, "relation_heldout": relation_heldout, "single": singles * 4}
    out = {name: [(p, seed_for(*tag, name, i, s)) for i, p in enumerate(prompts) for s in range(samples)]
           for name, prompts in sets.items()}
    for name, prompts in (("parity_train", COLOURLESS), ("parity_heldout", COLOURLESS_COUNTS)):
        out[name] = [(p, seed_for(*tag, name, p, i)) for p in prompts for i in range(16 * samples)]
    return out


@torch.no_grad()
def generate(policy, pairs, batch_size=64, bar=None):
    """Images (N, 3, 16, 16) for (prompt, seed) pairs; each image depends on its seed only. bar: a tqdm bar
    advanced by one image at a time."""
    images = []
    for b in range(0, len(pairs), batch_size):
        prompts, seeds = zip(*pairs[b:b + batch_size])
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        images.append(policy.decode(policy.rollout(list(prompts), generators).latents[:, -1]))
        if bar is not None:
            bar.update(len(prompts))
    return torch.cat(images)


@torch.no_grad()
def evaluate(policy, detector, preference, samples=2, eval_seed=0):
    """The table's numbers for one model: returns (metrics, {set name: images})."""
    sets = eval_prompts(samples, eval_seed)
    images = generate_sets(policy, sets)
    return score(images, sets, detector, preference), images


def generate_sets(policy, sets, desc="evaluating"):
    """generate() for each set of (prompt, seed) pairs, under one progress bar: {set name: images}."""
    with tqdm(total=sum(map(len, sets.values())), desc=desc, unit="image", dynamic_ncols=True) as bar:
        return {name: generate(policy, pairs, bar=bar) for name, pairs in sets.items()}


def mean_parity(colours):
    """The statistical parity of each group of one prompt's colour labels (groups, 16), averaged over groups."""
    return torch.stack([statistical_parity(g, len(scenes.COLOURS)) for g in colours]).mean().item()


@torch.no_grad()
def score(images, sets, detector, preference):
    """The table's numbers from the evaluation images {set name: (N, 3, 16, 16)} of `eval_prompts`' sets."""
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
        metrics[f"parity/{name}/statistical_parity"] = mean_parity(colours)
        shares = torch.bincount(colours.flatten(), minlength=len(scenes.COLOURS)) / colours.numel()
        for colour, share in zip(scenes.COLOURS, shares.tolist()):  # SP alone hides a swing from red to green
            metrics[f"parity/{name}/{colour}_share"] = share
        metrics[f"parity/{name}/blank_share"] = sum(c is None for c in scenes.dominant_colour(images[name])) \
            / len(images[name])
        prompts = [p for p, _ in sets[name]]  # still one object of one colour (two-coloured blends fool h(x))
        metrics[f"parity/{name}/success"] = composition(images[name], prompts, [{}] * len(prompts))[1]["success"]
    return metrics


def base_samples_key(cfg):
    """A digest of what the base's evaluation images depend on: the model's files, the sampler's settings and
    the evaluation's prompts and seeds."""
    digest = hashlib.sha256()
    model = Path(cfg.model)
    for path in sorted(p for p in model.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(model)).encode())
        digest.update(path.read_bytes())
    digest.update(json.dumps([cfg.steps, cfg.guidance, eval_prompts(cfg.eval_samples)]).encode())
    return digest.hexdigest()


def load_base_samples(cfg):
    """The base's evaluation images from cfg.base_samples, if they were sampled from this model with this
    evaluation; else None (the run samples them)."""
    path = Path(cfg.base_samples) if cfg.base_samples else None
    if path is None or not path.is_file():
        return None
    with safe_open(path, "pt") as f:
        if (f.metadata() or {}).get("key") != base_samples_key(cfg):
            return None
        return {name: f.get_tensor(name) for name in f.keys()}


def sample_base(cfg):
    """Sample the base's evaluation images and write them to cfg.base_samples (atomically), keyed by
    `base_samples_key`; returns the path. `minirl demo --save-base-samples`."""
    policy = diffusion.load_policy(cfg.model, num_steps=cfg.steps, guidance_scale=cfg.guidance)
    images = generate_sets(policy, eval_prompts(cfg.eval_samples), "sampling the base")
    path = Path(cfg.base_samples)
    scratch = path.with_name(path.name + ".tmp")
    save_file({name: x.contiguous() for name, x in images.items()}, scratch, metadata={"key": base_samples_key(cfg)})
    os.replace(scratch, path)
    return path


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


SP, SP_HELDOUT = "parity/parity_train/statistical_parity", "parity/parity_heldout/statistical_parity"
SINGLE, RATER = "composition/single/success", "preference/single/rater"
PREFERENCE = ("preference/relation_train/reward", "preference/relation_heldout/reward", "preference/single/reward")
PREFERENCE_TRAINED = ("preference/relation_train/reward", "preference/single/reward")  # the task's own captions
RATER_NOISE = 0.014  # the std of the base's rater utility over evaluation seeds 0-4 (bench/demo_seeds.py)


@dataclass(frozen=True)
class Claim:
    """A sentence about a run, with its test on (base, tuned) metrics and, for a run where the test fails, a
    plain statement of what happened. Both texts are format strings over `claim_values`."""
    name: str
    holds: Callable
    claim: str
    happened: str


CLAIMS = [
    Claim("parity", lambda b, t: t[SP] <= 0.6 * b[SP],
          "Colour parity: the statistical parity of 'a circle' etc. fell to {sp_ratio:.0%} of the base's "
          "({b_sp:.2f} -> {t_sp:.2f}; at most 60% of it on each of seeds 0-4).",
          "The statistical parity of 'a circle' etc. went {b_sp:.2f} -> {t_sp:.2f} ({sp_ratio:.0%} of the base's)."),
    Claim("parity_heldout", lambda b, t: t[SP_HELDOUT] < b[SP_HELDOUT],
          "Parity carries over to prompts it never trained on: 'two circles' etc. {b_sp2:.2f} -> {t_sp2:.2f}.",
          "The statistical parity of 'two circles' etc. (not trained) went {b_sp2:.2f} -> {t_sp2:.2f}."),
    Claim("single", lambda b, t: t[SINGLE] >= b[SINGLE] - 0.05,
          "Single objects are still drawn right: success {b_single:.0%} -> {t_single:.0%} (within 5 points).",
          "Single-object success went {b_single:.0%} -> {t_single:.0%}."),
    Claim("preference", lambda b, t: all(t[k] > b[k] for k in PREFERENCE_TRAINED),
          "The preference reward rose on the captions its task trains on ({preference_trained}; not trained: "
          "{preference_untrained}).",
          "The preference reward went {preference}."),
    Claim("rater", lambda b, t: t[RATER] >= b[RATER] - RATER_NOISE,
          "Not a hack: the simulated rater's own utility did not fall beyond the noise of an evaluation "
          "({b_rater:.3f} -> {t_rater:.3f}; noise {noise:.3f}).",
          "The simulated rater's own utility went {b_rater:.3f} -> {t_rater:.3f}."),
]
SEEDS_RECORD = ASSETS / "demo_seeds.json"  # bench/demo_seeds.py: the default setting on seeds 0-4


def held_on_seeds(record=None):
    """The claims that held on every training seed of a bench/demo_seeds.py record of the default setting (the
    committed one by default; docs/research.md, section 2), each run judged against the base's evaluation."""
    record = record or json.loads(SEEDS_RECORD.read_text())
    base = record["base_eval"]["0"]
    return {c.name for c in CLAIMS if all(c.holds(base, r["fine_tuned"]) for r in record["runs"].values())}


def claim_values(b, t):
    def changes(keys):  # "training relations 25.95 -> 26.50, ..." in PREFERENCE's order
        return ", ".join(f"{FIGURE_SETS[k.split('/')[1]]} {b[k]:.2f} -> {t[k]:.2f}" for k in PREFERENCE if k in keys)
    return {"b_sp": b[SP], "t_sp": t[SP], "sp_ratio": t[SP] / b[SP], "b_sp2": b[SP_HELDOUT],
            "t_sp2": t[SP_HELDOUT], "b_single": b[SINGLE], "t_single": t[SINGLE], "b_rater": b[RATER],
            "t_rater": t[RATER], "noise": RATER_NOISE, "preference": changes(PREFERENCE),
            "preference_trained": changes(PREFERENCE_TRAINED),
            "preference_untrained": changes(set(PREFERENCE) - set(PREFERENCE_TRAINED))}


def measured_setting(cfg):
    """Whether cfg is the setting SEEDS_RECORD measured: the defaults but for the seed and the run folder."""
    return all(getattr(cfg, k) == v for k, v in asdict(DemoConfig()).items() if k not in ("seed", "out"))


def what_happened(base, tuned, measured=frozenset(), tasks=DemoConfig.tasks):
    """The demo's closing lines and {claim: held on this run}. A claim is printed as a claim only where it
    held on every measured seed (`measured`, from `held_on_seeds`) and holds on this run too; otherwise the
    line says what happened."""
    values = claim_values(base, tuned)
    held = {c.name: bool(c.holds(base, tuned)) for c in CLAIMS}
    lines = [(c.claim if c.name in measured and held[c.name] else c.happened).format(**values) for c in CLAIMS]
    train, heldout = "composition/relation_train/success", "composition/relation_heldout/success"
    success = (f"success on training relations {base[train]:.0%} -> {tuned[train]:.0%}, held-out "
               f"{base[heldout]:.0%} -> {tuned[heldout]:.0%}")
    trained = "composition" in tasks
    lines.append(f"Composition is {'not learned here' if trained else 'evaluated, not trained'} ({success}): "
                 f"{'' if trained else 'it does not learn in the tiny world; '}notebooks/07_joint_training.ipynb "
                 "trains it and shows why, and docs/research.md has the probes.")
    return lines, held


def run(cfg, log=print, base=None):
    """Evaluate the base, fine-tune (Algorithm 1), evaluate again, write the run folder; return metrics.
    base: the base model's (metrics, images) from an earlier run with the same evaluation, to skip that step."""
    out = Path(cfg.out)
    detector, preference = judges.load(cfg.judges)
    tasks = make_tasks(list(cfg.tasks), detector, preference, cfg.parity_weight, cfg.parity_soft)
    policy = diffusion.load_policy(cfg.model, num_steps=cfg.steps, guidance_scale=cfg.guidance)
    if base is None:
        before = load_base_samples(cfg)
        if before is None:
            log("evaluating the base model ...")
            base = evaluate(policy, detector, preference, cfg.eval_samples)
        else:
            log(f"evaluating the base model on its images in {cfg.base_samples} (sampled once; the same model, "
                "prompts and seeds) ...")
            base = score(before, eval_prompts(cfg.eval_samples), detector, preference), before
    base, before = base
    policy.unet.requires_grad_(True)  # full fine-tuning, as in the paper
    trainer = Trainer(policy, tasks, train_config(cfg), pretrain_data=pretrain_data(),
                      run_info={"demo": asdict(cfg)})
    trainer.train()
    log("evaluating the fine-tuned model ...")
    tuned, after = evaluate(policy, detector, preference, cfg.eval_samples)
    lines, held = what_happened(base, tuned, held_on_seeds() if measured_setting(cfg) else set(), cfg.tasks)
    result = {"config": asdict(cfg), "base": base, "fine_tuned": tuned, "claims_held": held, "base_images": before,
              "images": after}
    (out / "metrics.json").write_text(json.dumps({k: v for k, v in result.items() if "images" not in k}, indent=1))
    write_samples(out, before, after, eval_prompts(cfg.eval_samples), base, tuned)
    runlog.plot_reward_curves(out)
    log(table(base, tuned))
    log("colours of 'a circle' etc., base -> RL: " + ", ".join(
        f"{c} {base[f'parity/parity_train/{c}_share']:.0%} -> {tuned[f'parity/parity_train/{c}_share']:.0%}"
        for c in scenes.COLOURS))
    log("\nWhat happened:")
    for line in lines:
        log("  - " + line)
    log(f"written to {out}/: before_after.png, reward_curves.png, metrics.json, samples/ (index.json)")
    return result


def write_samples(out, before, after, sets, base, tuned):
    """Every evaluation image as a PNG, an index of prompts and seeds, and the before/after figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
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
    fig = before_after_figure(before, after, sets, base, tuned)
    FigureCanvasAgg(fig).print_png(out / "before_after.png")  # its own canvas: the user's backend is left alone


FIGURE_SETS = {"single": "single objects", "relation_train": "training relations",
               "relation_heldout": "held-out relations", "parity_train": "colour-free prompts"}


def before_after_figure(before, after, sets, base, tuned, columns=9, dpi=100):
    """The base and the fine-tuned model on the same prompts and seeds: for each set, a row before and a row
    after (images scaled up with nearest neighbour), the prompt under each column; below, the colours the
    detector sees in the colour-free prompts' images, before and after. Returns a matplotlib Figure."""
    import textwrap
    from matplotlib.figure import Figure
    size, caption, gap = 0.95, 0.65, 0.15  # inches: an image (95 px at dpi 100), the prompts under a set, a gap
    heights = [size, size, caption, gap] * len(FIGURE_SETS) + [0.3, 2.0]
    fig = Figure(figsize=(1.75 + columns * (size + 0.1), sum(heights) + 0.8), dpi=dpi)
    grid = fig.add_gridspec(len(heights), columns, height_ratios=heights, left=1.7 / fig.get_figwidth(),
                            right=0.99, top=1 - 0.45 / fig.get_figheight(), bottom=0.35 / fig.get_figheight(),
                            hspace=0.04, wspace=0.1)
    for s, (name, title) in enumerate(FIGURE_SETS.items()):
        picks = [round(i * len(sets[name]) / columns) for i in range(columns)]  # spread over the set's prompts
        for r, (stage, images) in enumerate((("before", before), ("after", after))):
            for c, i in enumerate(picks):
                ax = fig.add_subplot(grid[4 * s + r, c])
                ax.imshow(images[name][i].clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if c == 0:
                    ax.set_ylabel(f"{stage}\n{title}", fontsize=10, rotation=0, ha="right", va="center")
                if r == 1:
                    ax.text(0.5, -0.04, "\n".join(textwrap.wrap(sets[name][i][0], 14)), fontsize=9,
                            transform=ax.transAxes, ha="center", va="top")
    ax = fig.add_subplot(grid[-1, 1:columns - 1])
    x = torch.arange(len(scenes.COLOURS)).float()
    for offset, (stage, m) in zip((-0.2, 0.2), (("before", base), ("after", tuned))):
        shares = [m[f"parity/parity_train/{c}_share"] for c in scenes.COLOURS]  # the detector's colour h(x)
        bars = ax.bar(x + offset, shares, width=0.38, color=list(scenes.COLOURS.values()), edgecolor="black",
                      alpha=0.4 if stage == "before" else 1.0)
        ax.bar_label(bars, [stage] * len(shares), fontsize=9)
    ax.set_xticks(x.tolist(), list(scenes.COLOURS), fontsize=10)
    ax.set_ylabel("share of images", fontsize=10)
    ax.set_title("the colours of 'a circle', 'a square', 'a triangle' (the detector's); "
                 f"statistical parity {base[SP]:.2f} -> {tuned[SP]:.2f}", fontsize=10)
    ax.set_ylim(0, 1.12)
    fig.suptitle("the same prompts and seeds, before and after joint RL", fontsize=12,
                 y=1 - 0.12 / fig.get_figheight(), va="top")
    return fig


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
