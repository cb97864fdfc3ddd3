"""minirl's command line: train, sample, export, make-tiny-sd, make-tiny-rewards, pretrain, demo, train-judges,
alignment-tax.

    minirl make-tiny-sd runs/tiny-sd
    minirl train --pipeline runs/tiny-sd --reward jpeg_compressibility --prompts cat,dog --epochs 4 --out runs/x
    accelerate launch -m minirl.cli train ...      # several processes or GPUs
    minirl sample --run runs/x --prompts "a cat,a dog" --out runs/x-samples   # the trained model's images
    minirl export --run runs/x --out runs/x-lora                             # its LoRA, for diffusers

A run folder holds everything needed to reproduce it: config.json (every argument, the seed, the package
versions), metrics.jsonl, images/ and checkpoints/ (`--resume` continues from the latest).
"""

import argparse
import json
import os
import shlex
import sys
from dataclasses import fields
from pathlib import Path

from minirl.trainer import TrainConfig

ASSETS = Path(__file__).parents[1] / "assets"
DEFAULT_PROMPTS = {  # each task's shipped prompt list (assets/prompts/README.md)
    **{name: f"@{ASSETS / 'prompts' / 'preference.txt'}"
       for name in ("imagereward", "pickscore", "hpsv2", "aesthetic", "clipscore")},
    "parity": f"@{ASSETS / 'prompts' / 'occupations.txt'}",
    "composition": f"@{ASSETS / 'prompts' / 'composition.txt'}",
}


def train_parser(sub):
    from minirl.presets import PRESETS
    p = sub.add_parser("train", help="RL fine-tuning of a Stable Diffusion pipeline on one reward or several jointly",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="a named set of defaults (minirl.presets), each overridable by its flag")
    p.add_argument("--pipeline", default=None,
                   help="hub id or local folder of a diffusers SD 1.x/2.x or SD3 pipeline")
    p.add_argument("--reward", default="jpeg_compressibility",
                   help="NAME or NAME=PATH_OR_ID (a local folder or hub id for its weights); several, "
                        "comma-separated, train jointly, one task each (Algorithm 1). Names: "
                        "jpeg_compressibility, jpeg_incompressibility, imagereward, pickscore, hpsv2, aesthetic, "
                        "clipscore, composition, parity")
    p.add_argument("--prompts", action="append", default=None, metavar="[TASK=]SPEC",
                   help="comma-separated prompts or @FILE (one a line), for every task or, as TASK=SPEC, for one; "
                        "repeatable. Default: the task's shipped list (assets/prompts)")
    p.add_argument("--group-size", action="append", default=None, metavar="[TASK=]N",
                   help="samples per prompt, for every task or as TASK=N; a distribution reward (parity) scores "
                        "each group (default 16 for parity, 1 otherwise)")
    p.add_argument("--parity-classes", default="skin_tone",
                   help="the parity classifier's classes: a class set's name (skin_tone, perceived_gender) or "
                        "comma-separated texts, one a class")
    p.add_argument("--pretrain-data", default=None,
                   help="a folder of pretraining images with captions for the L_pre step (minirl.data)")
    p.add_argument("--pretrain-beta", type=float, default=None, help="weight of L_pre (default 1 with --pretrain-data)")
    p.add_argument("--pretrain-batch-size", type=int, default=None, help="L_pre batch (default: --train-batch-size)")
    p.add_argument("--pretrain-uncond-fraction", type=float, default=0.1,
                   help="L_pre samples whose caption is dropped, as Stable Diffusion's training drops 10%%, so that "
                        "L_pre anchors the unconditional prediction that guidance weighs too")
    p.add_argument("--epochs", type=int, default=10, help="RL iterations (the paper's); with --resume, the total")
    p.add_argument("--samples-per-epoch", type=int, default=16, help="per task, all processes together")
    p.add_argument("--sample-batch-size", type=int, default=8, help="per process")
    p.add_argument("--train-batch-size", type=int, default=4, help="per process, samples an optimizer step")
    p.add_argument("--train-micro-batch", type=int, default=0,
                   help="transitions per UNet call in training (0: the train batch size)")
    p.add_argument("--steps", type=int, default=20, help="denoising steps")
    p.add_argument("--eta", type=float, default=None,
                   help="DDIM's noise, in (0, 1] (> 0: a stochastic policy; default 1); ddpm's step has its own, "
                        "flow's is --noise-level")
    p.add_argument("--guidance", type=float, default=5.0, help="classifier-free guidance scale")
    p.add_argument("--resolution", type=int, default=None,
                   help="the images' side in pixels (default: the model's own; SD 3.5 medium's is 1024)")
    p.add_argument("--min-sigma", type=float, default=0.05, help="steps with sigma_t below it are not trained on")
    p.add_argument("--scheduler", choices=("ddim", "ddpm", "flow"), default=None,
                   help="the sampler: ddim or ddpm for SD 1.x/2.x, flow for SD3 (default: the pipeline's kind)")
    p.add_argument("--noise-level", type=float, default=None,
                   help="flow pipelines (SD3): the SDE's exploration noise, > 0 (default 0.7, Flow-GRPO's)")
    p.add_argument("--lora-rank", type=int, default=4, help="0: full fine-tuning of the UNet")
    p.add_argument("--timestep-fraction", type=float, default=1.0,
                   help="fraction of a chain's trainable steps (sigma_t >= --min-sigma) trained on, drawn at random")
    p.add_argument("--inner-epochs", type=int, default=1, help="PPO's passes over each epoch's samples")
    p.add_argument("--loss", choices=("ppo", "reinforce"), default="ppo",
                   help="ppo: the clipped surrogate (DDPO_IS); reinforce: the plain policy gradient (DDPO_SF)")
    p.add_argument("--clip-range", type=float, default=1e-4,
                   help="PPO's epsilon, on a log-probability averaged over the latent's dimensions")
    p.add_argument("--advantages", choices=("batch", "per_prompt", "group"), default="batch",
                   help="rewards normalised over the global batch (the paper's), per prompt (DDPO's tracker) or per "
                        "group of samples of one prompt (GRPO's)")
    p.add_argument("--adv-clip", type=float, default=5.0, help="advantages are clipped to +-this")
    p.add_argument("--lr", type=float, default=3e-4, help="AdamW's learning rate")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW's weight decay")
    p.add_argument("--max-grad-norm", type=float, default=1.0, help="gradients are clipped to this norm")
    p.add_argument("--kl-weight", type=float, default=0.0,
                   help="KL to the pretrained model (the UNet with LoRA disabled), as in DPOK (0.01)")
    p.add_argument("--seed", type=int, default=0,
                   help="every random draw (prompts, noise, timesteps, shuffles, LoRA's init) derives from it")
    p.add_argument("--out", default="runs/rl",
                   help="the run folder: config.json, metrics.jsonl, images/, eval/, checkpoints/, reward_curves.png")
    p.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), default=None,
                   help="bf16 on GPUs (frozen weights in bf16, trained ones in fp32); CPUs run 'no' (fp32). "
                        "Default: Accelerate's (the config `accelerate launch` was given, or "
                        "ACCELERATE_MIXED_PRECISION), else 'no'")
    p.add_argument("--tracker", default=None,
                   help="Accelerate trackers to send the metrics and image grids to too, comma-separated "
                        "(tensorboard, wandb, ...; all: every one installed); each needs its package")
    p.add_argument("--save-every", type=int, default=1, help="a checkpoint every N epochs (and at the end)")
    p.add_argument("--keep-checkpoints", type=int, default=2, help="the newest N checkpoints are kept")
    p.add_argument("--image-every", type=int, default=1,
                   help="a grid of each task's first sample batch every N epochs (0: never)")
    p.add_argument("--eval-every", type=int, default=0,
                   help="every N epochs (and at the end), sample --eval-prompts with fixed seeds and score them: "
                        "eval/ and eval_* metrics (0: never)")
    p.add_argument("--eval-prompts", action="append", default=None, metavar="[TASK=]SPEC",
                   help="held-out prompts for --eval-every, as --prompts: comma-separated or @FILE, for every task "
                        "or, as TASK=SPEC, for one; a distribution reward's get --group-size images each")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in --out (its checkpoints, metrics and images go) with a new one")
    p.set_defaults(func=train)
    return p


def read_prompts(spec):
    """The prompts of a --prompts SPEC: comma-separated, or @FILE, one a line (UTF-8, its byte-order mark dropped)."""
    from minirl.data import read_text
    if spec.startswith("@") and not Path(spec[1:]).is_file():
        raise FileNotFoundError(f"--prompts {spec!r}: no such file; give @FILE with one prompt a line")
    prompts = read_text(spec[1:]).splitlines() if spec.startswith("@") else spec.split(",")
    prompts = [p.strip() for p in prompts if p.strip()]
    if not prompts:
        raise ValueError(f"--prompts {spec!r} holds no prompt; give e.g. --prompts cat,dog or @prompts.txt")
    return prompts


def per_task(flag, values, names):
    """{task: value} from a repeatable flag whose values are VALUE (every task) or TASK=VALUE."""
    chosen = {}
    for value in values or []:
        task, _, rest = value.partition("=")
        if rest and task in names:
            chosen[task] = rest
        elif rest and task.isidentifier():
            raise ValueError(f"{flag} {value!r} names task {task!r}, which is not one of this run's {names}")
        else:
            chosen.update(dict.fromkeys(names, value))
    return chosen


def reward_specs(spec):
    """--reward 'a,b=PATH' -> [(name, path or None), ...], names unique and known."""
    from minirl.rewards import NAMES
    specs = [(name.strip(), path.strip() or None) for name, _, path in (s.partition("=") for s in spec.split(","))]
    names = [name for name, _ in specs]
    for name in names:
        if name not in NAMES:
            raise ValueError(f"unknown reward {name!r} in --reward {spec!r}; available: {', '.join(NAMES)}")
    if len(set(names)) < len(names):
        raise ValueError(f"--reward {spec!r} names a reward twice; each reward is one task")
    return specs


def make_tasks(args, device, dtype):
    """One task a reward, each with its prompts and group size, checked before any model is loaded; then the
    rewards loaded and every prompt checked by the reward that will score it."""
    from minirl.rewards import load as load_reward
    from minirl.tasks import Task
    specs = reward_specs(args.reward)
    names = [name for name, _ in specs]
    prompt_specs = per_task("--prompts", args.prompts, names)
    group_sizes = per_task("--group-size", args.group_size, names)
    prompts, groups = {}, {}
    for name in names:
        prompts[name] = read_prompts(prompt_specs.get(name) or DEFAULT_PROMPTS.get(name, "cat,dog,horse,monkey"))
        size = group_sizes.get(name, "16" if name == "parity" else "1")
        if not size.isdigit() or int(size) < 1:
            raise ValueError(f"--group-size for task {name!r} must be an int >= 1; got {size!r}")
        groups[name] = int(size)
        if args.sample_batch_size % groups[name]:
            raise ValueError(f"task {name!r}: its groups of {groups[name]} samples of one prompt must fill whole "
                             f"sample batches; --sample-batch-size {args.sample_batch_size} is not a multiple "
                             f"of --group-size {groups[name]}")
    if "parity" in names and groups["parity"] < 2:
        raise ValueError(f"parity scores each group of samples of one prompt as a whole; --group-size must be "
                         f">= 2 for it (the paper's 16); got {groups['parity']}")
    tasks = []
    for name, path in specs:
        options = {"classes": parity_classes(args.parity_classes)} if name == "parity" else {}
        reward = load_reward(name, path, device=device, dtype=dtype, **options)
        if hasattr(reward, "check_prompts"):
            reward.check_prompts(prompts[name])
        tasks.append(Task(name, prompts[name], reward, group_size=groups[name]))
    return tasks


def parity_classes(spec):
    from minirl.rewards.parity import CLASS_SETS
    return spec if spec in CLASS_SETS else [c.strip() for c in spec.split(",") if c.strip()]


def check_arguments(args):
    """The policy's and the data's settings, checked before any work (TrainConfig.check does the rest)."""
    from minirl.trainer import check_number
    check_number(args, "steps", minimum=1, integer=True, label="--steps")
    if args.eta is not None:
        check_number(args, "eta", minimum=0, inclusive=False, maximum=1, label="--eta")
    if args.noise_level is not None:
        check_number(args, "noise_level", minimum=0, inclusive=False, label="--noise-level")
    check_number(args, "guidance", minimum=0, label="--guidance")
    check_number(args, "min_sigma", minimum=0, label="--min-sigma")
    check_number(args, "lora_rank", minimum=0, integer=True, label="--lora-rank")
    if args.pretrain_batch_size is not None:
        check_number(args, "pretrain_batch_size", minimum=1, integer=True, label="--pretrain-batch-size")
    if args.pretrain_beta is not None:
        check_number(args, "pretrain_beta", minimum=0, label="--pretrain-beta")
    check_number(args, "eval_every", minimum=0, integer=True, label="--eval-every")
    if (args.eval_every > 0) != bool(args.eval_prompts):
        raise ValueError(f"--eval-every N and --eval-prompts go together (held-out prompts sampled every N epochs); "
                         f"got --eval-every {args.eval_every} and {'' if args.eval_prompts else 'no '}--eval-prompts")


def trackers(spec):
    """--tracker's names, each an Accelerate tracker whose package is installed (Accelerate would skip it without a
    word); 'all': every installed one, of which there must be one. None: no tracker."""
    from accelerate.tracking import get_available_trackers
    from accelerate.utils import LoggerType
    if spec is None:
        return None
    names, valid = [n.strip() for n in spec.split(",") if n.strip()], [t.value for t in LoggerType]
    installed = [t.value for t in get_available_trackers()]
    for name in names:
        if name not in valid:
            raise ValueError(f"--tracker {name!r} is not one of Accelerate's trackers: {', '.join(valid)}")
        if name == "all" and not installed:
            raise ValueError("--tracker all: no tracker is installed; install one, e.g. pip install tensorboard")
        if name != "all" and name not in installed:
            raise ValueError(f"--tracker {name} needs the package {name}, which is not installed: pip install {name}")
    return names or None


def mixed_precision(args):
    """--mixed-precision, or else Accelerate's: the config `accelerate launch` was given (it sets
    ACCELERATE_MIXED_PRECISION), else 'no'."""
    from accelerate.utils import parse_choice_from_env
    if args.mixed_precision is not None:
        return args.mixed_precision
    found = parse_choice_from_env("ACCELERATE_MIXED_PRECISION", "no")
    if found not in ("no", "bf16", "fp16"):
        raise ValueError(f"Accelerate's mixed precision {found!r} (ACCELERATE_MIXED_PRECISION) is not supported; "
                         f"give --mixed-precision no, bf16 or fp16")
    return found


def eval_prompts(args, tasks):
    """{task: held-out prompts} from --eval-prompts, each checked by the reward that will score it."""
    names = [task.name for task in tasks]
    prompts = {name: read_prompts(spec) for name, spec in per_task("--eval-prompts", args.eval_prompts, names).items()}
    for task in tasks:
        if task.name in prompts and hasattr(task.reward, "check_prompts"):
            task.reward.check_prompts(prompts[task.name])
    return prompts


def build(args, pipe=None):
    """Accelerator, policy, tasks and pretraining data from the arguments, validated before anything heavy is
    loaded (the rewards' prompts are checked before any sampling). pipe: a pipeline already built on the
    device in its dtype, used in place of loading args.pipeline (bench/gpu_check.py's random real-size ones)."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from minirl import sd
    from minirl.rewards.loading import device_and_dtype

    if args.pipeline is None:
        raise ValueError("give --pipeline (a hub id or a local folder of a diffusers pipeline) or a --preset")
    check_arguments(args)
    log_with, args.mixed_precision = trackers(args.tracker), mixed_precision(args)
    if args.pretrain_beta is None:
        args.pretrain_beta = 1.0 if args.pretrain_data else 0.0
    config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)},
                         verbose=True)  # the command line prints the batch arithmetic and the cost estimate
    if args.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ValueError("--mixed-precision fp16 is not supported on CPU (it overflows to NaN and many CPU "
                         "kernels lack it); use 'no' on CPU, 'bf16' on a GPU")
    dtype = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.mixed_precision]
    device_and_dtype("cuda" if torch.cuda.is_available() else "cpu", dtype)  # bf16 where the device runs it
    # without a GPU, processes launched together (torchrun) join as CPU processes (gloo), not as separate runs
    acc = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=args.mixed_precision, log_with=log_with,
                      project_dir=args.out)
    device = acc.device
    config.check(acc.num_processes, len(reward_specs(args.reward)))
    tasks = make_tasks(args, device, dtype)
    set_seed(args.seed)  # LoRA's random init below
    if pipe is None:
        pipe = sd.load_pipeline(args.pipeline, dtype=dtype, device=device)
    args.scheduler = sd.use_scheduler(pipe, args.scheduler)
    if args.noise_level is not None and args.scheduler != "flow":
        raise ValueError(f"--noise-level is the flow SDE's (SD3 pipelines); a {args.scheduler} run's noise is --eta")
    if args.eta is not None and args.scheduler != "ddim":
        raise ValueError(f"--eta is DDIM's noise; a {args.scheduler} run's " + (
            "is --noise-level" if args.scheduler == "flow" else "step has its own variance (DDIM's at eta 1): leave "
                                                                  "--eta out"))
    if args.scheduler == "ddim" and args.eta is None:
        args.eta = 1.0  # DDPO's; ddpm and flow runs record eta None: their steps have none
    denoiser = sd.denoiser(pipe)
    if args.lora_rank > 0:
        sd.add_lora(denoiser, args.lora_rank)
        for p in denoiser.parameters():
            if p.requires_grad:
                p.data = p.data.float()  # trainable weights in fp32, frozen ones in `dtype`
    else:
        denoiser.float().requires_grad_(True)
    # the sampler's noise where given (DDIM's eta, the flow SDE's noise level), else the policy's default
    noise = {k: v for k, v in (("eta", args.eta), ("noise_level", args.noise_level)) if v is not None}
    policy = sd.policy_from_pipeline(pipe, resolution=args.resolution, num_steps=args.steps,
                                     guidance_scale=args.guidance, min_sigma=args.min_sigma, **noise)
    pretrain_data = None
    if args.pretrain_data:
        from minirl.data import CaptionedImages
        pretrain_data = CaptionedImages(args.pretrain_data, args.resolution or sd.resolution(pipe),
                                        args.pretrain_batch_size or args.train_batch_size)
    return acc, policy, tasks, config, pretrain_data


def train(args):
    from minirl.runlog import check_out
    from minirl.trainer import Trainer
    if args.resume and args.overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite replaces it; give one of them")
    check_out(args.out, resume=args.resume, overwrite=args.overwrite)  # before anything is loaded
    acc, policy, tasks, config, pretrain_data = build(args)
    trainer = Trainer(policy, tasks, config, accelerator=acc, pretrain_data=pretrain_data, run_info=run_info(args),
                      eval_prompts=eval_prompts(args, tasks))
    if args.resume and trainer.resume().epoch >= config.epochs:
        trainer.log.release()
        if acc.is_main_process:
            print(f"the run in {config.out} has {trainer.epoch} epochs already; raise --epochs to continue it")
        return
    trainer.train()
    if acc.is_main_process:
        print(f"reward curves: {Path(config.out) / 'reward_curves.png'}")
    acc.end_training()


def run_info(args):
    """What defines a `train` run beside its TrainConfig, for config.json and the resume check: the arguments, with
    local paths resolved (relative or absolute, a trailing slash: the same run). The prompts and group sizes are in
    the trainer's record of the tasks, parsed ("cat, dog" is "cat,dog"; an edited @FILE is not the same run)."""
    info = {k: v for k, v in vars(args).items() if k not in ("func", "prompts", "group_size")}
    info.update(pipeline=_resolved(args.pipeline), pretrain_data=_resolved(args.pretrain_data),
                reward=",".join(name if path is None else f"{name}={_resolved(path)}"
                                for name, path in reward_specs(args.reward)))
    return info


def _resolved(path):
    """A local file or folder as its absolute path; anything else (a hub id, None) as it is."""
    return str(Path(path).resolve()) if path is not None and Path(path).exists() else path


def interrupted(args, argv):
    """The line Ctrl-C ends a command with: for `train`, the command that continues the run from its latest
    checkpoint (the same one with --resume) or, before the first, the one that starts it again."""
    if args.command != "train":
        return "interrupted"
    from minirl import checkpoint
    given = [a for a in (sys.argv[1:] if argv is None else argv) if a not in ("--resume", "--overwrite")]
    if checkpoint.latest(Path(args.out) / "checkpoints") is not None:
        return f"interrupted; continue the run with: {shlex.join(['minirl', *given, '--resume'])}"
    return (f"interrupted before the run's first checkpoint; start it again with: "
            f"{shlex.join(['minirl', *given, '--overwrite'])}")


def sample(args):
    from minirl.export import load_trained
    from minirl.export import sample as draw
    from minirl.rewards.loading import device_and_dtype
    from minirl.trainer import check_number
    prompts = read_prompts(args.prompts)
    check_number(args, "images_per_prompt", minimum=1, integer=True, label="--images-per-prompt")
    check_number(args, "batch_size", minimum=1, integer=True, label="--batch-size")
    _empty_folder(args.out)
    device, dtype = device_and_dtype(None, args.dtype)
    _, policy = load_trained(args.run, args.checkpoint, args.pipeline, device=device, dtype=dtype)
    index = draw(policy, prompts, args.out, args.images_per_prompt, args.seed, args.batch_size)
    print(f"{len(index)} images written to {args.out} (index.json: each one's prompt and seed)")


def export(args):
    from minirl import sd
    from minirl.export import export as write
    from minirl.export import load_trained
    _empty_folder(args.out)
    pipe, _ = load_trained(args.run, args.checkpoint, args.pipeline)
    written = write(pipe, args.out)
    how = (f"pipe = {type(pipe).__name__}.from_pretrained({pipe.name_or_path!r}); "
           f"pipe.load_lora_weights({str(args.out)!r})" if written.is_file()
           else f"{type(sd.denoiser(pipe)).__name__}.from_pretrained({str(written)!r})")
    print(f"wrote {written}; load it with diffusers: {how}")


def trained_model_parser(sub, name, func, what):
    """The parser of a command on a run's trained model (minirl.export): --run, --out, --checkpoint, --pipeline."""
    p = sub.add_parser(name, help=what, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run", required=True, help="a run folder (the --out of `minirl train`)")
    p.add_argument("--out", required=True, help="a new or empty folder to write to")
    p.add_argument("--checkpoint", default=None, help="a checkpoint folder of the run (default: its newest)")
    p.add_argument("--pipeline", default=None, help="the pipeline the run fine-tuned (default: the one it names)")
    p.set_defaults(func=func)
    return p


def _empty_folder(out):
    """Refuse an --out that is not a new or empty folder: nothing there is overwritten."""
    if Path(out).exists() and (not Path(out).is_dir() or any(Path(out).iterdir())):
        raise ValueError(f"--out {str(out)!r} is not an empty folder; give a new or empty one (nothing is overwritten)")


def make_tiny_rewards(args):
    from minirl.rewards import make_tiny_rewards
    for name, folder in make_tiny_rewards(args.folder).items():
        print(f"{name:12s} {folder}")
    print(f"tiny random reward models written to {args.folder}: load one with --reward NAME={args.folder}/NAME")


def make_tiny_sd(args):
    from minirl.sd import make_tiny_sd, make_tiny_sd3
    folder = (make_tiny_sd3 if args.sd3 else make_tiny_sd)(args.folder, sample_size=args.sample_size)
    pixels = args.sample_size * (1 if args.sd3 else 2)
    print(f"wrote a tiny random Stable Diffusion{' 3' if args.sd3 else ''} pipeline ({pixels} px) to {folder}")


def demo(args):
    """The tiny world's joint RL (Algorithm 1) from the committed base model, evaluated before and after."""
    from minirl.tinyworld import demo as tinyworld_demo
    cfg = tinyworld_demo.DemoConfig(**{f.name: getattr(args, f.name) for f in fields(tinyworld_demo.DemoConfig)})
    if args.save_base_samples:
        print(f"base model's evaluation images written to {tinyworld_demo.sample_base(cfg)}")
    else:
        tinyworld_demo.run(cfg)


def train_judges(args):
    from minirl.tinyworld.judges import train_judges
    card = train_judges(args.out, args.detector_steps, args.preference_steps, args.seed)
    print(json.dumps(card, indent=1))
    print(f"reward models written to {args.out}")


def alignment_tax(args):
    from minirl.tinyworld.demo import alignment_tax
    alignment_tax(args.seeds, args.epochs, args.out)


def seed_list(spec):
    """'0,1,2' -> [0, 1, 2]: distinct integer seeds."""
    try:
        seeds = [int(x) for x in spec.split(",")]
    except ValueError:
        seeds = None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{spec!r} is not comma-separated distinct integer seeds (e.g. 0,1,2)")
    return seeds


def guidance_scales(spec):
    """'1,1.5,3' -> [1.0, 1.5, 3.0]: guidance scales, each >= 0 (1 or less: no guidance)."""
    try:
        scales = [float(g) for g in spec.split(",")]
    except ValueError:
        scales = None
    if scales is None or any(not g >= 0 for g in scales):
        raise argparse.ArgumentTypeError(f"{spec!r} is not comma-separated guidance scales >= 0 (e.g. 1,1.5,2,3)")
    return scales


def composition_rl(args):
    """Composition RL where the base partly knows order (its guidance sweep with --guidance-sweep)."""
    from minirl.tinyworld import relation_rl
    if args.guidance_sweep:
        relation_rl.guidance_sweep(args, args.guidance_sweep)
    elif args.alignment_tax:
        relation_rl.alignment_tax(args, args.alignment_tax)
    else:
        relation_rl.experiment(args)


def pretrain(args):
    from minirl.tinyworld.diffusion import PretrainConfig, pretrain
    config = PretrainConfig(**{f.name: getattr(args, f.name) for f in fields(PretrainConfig)})
    print(f"pretrained model written to {pretrain(config, resume=args.resume)}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="minirl", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = train_parser(sub)
    p = sub.add_parser("make-tiny-sd", help="write a tiny random SD pipeline (offline, for tests and CPU runs)")
    p.add_argument("folder")
    p.add_argument("--sample-size", type=int, default=32, help="latent size (32: diffusers' test pipeline, "
                   "64 px images, or 32 px with --sd3; 16: four times faster)")
    p.add_argument("--sd3", action="store_true", help="a StableDiffusion3Pipeline (flow matching, no T5)")
    p.set_defaults(func=make_tiny_sd)
    p = trained_model_parser(sub, "sample", sample, "sample images from a run's trained model, with the run's sampler")
    p.add_argument("--prompts", required=True, help="comma-separated prompts or @FILE (one a line)")
    p.add_argument("--images-per-prompt", type=int, default=1, help="images of each prompt, each from its own seed")
    p.add_argument("--seed", type=int, default=0, help="image j of prompt i is drawn from seed (seed, i, j)")
    p.add_argument("--batch-size", type=int, default=8, help="images sampled together")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="the pipeline's weights (bfloat16 on a GPU)")
    trained_model_parser(sub, "export", export,
                         "write a run's trained LoRA (or full UNet / transformer) in the layout diffusers loads")
    p = sub.add_parser("make-tiny-rewards", help="write a tiny random twin of every reward model (offline)")
    p.add_argument("folder")
    p.set_defaults(func=make_tiny_rewards)
    from minirl.tinyworld.diffusion import PretrainConfig
    p = sub.add_parser("pretrain", help="pretrain the tiny world's text-to-image model on rendered scenes",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in fields(PretrainConfig):
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default,
                       help="default: %(default)s")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.set_defaults(func=pretrain)
    from minirl.tinyworld.demo import DemoConfig, TASKS
    p = sub.add_parser("demo", help="the tiny world's joint RL from the committed base model (5 min, 2 CPU cores)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in fields(DemoConfig):
        if f.name == "tasks":
            p.add_argument("--tasks", type=lambda s: tuple(s.split(",")), default=f.default,
                           help=f"comma-separated subset of {','.join(TASKS)} (default: {','.join(f.default)})")
        elif isinstance(f.default, bool):  # --parity-soft / --no-parity-soft
            p.add_argument("--" + f.name.replace("_", "-"), action=argparse.BooleanOptionalAction, default=f.default,
                           help="default: %(default)s")
        else:
            p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default,
                           help="default: %(default)s")
    p.add_argument("--save-base-samples", action="store_true",
                   help="only sample the base model's evaluation images and write them to --base-samples")
    p.set_defaults(func=demo)
    p = sub.add_parser("train-judges", help="train the tiny world's detector and preference model",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="runs/judges")
    p.add_argument("--detector-steps", type=int, default=1500)
    p.add_argument("--preference-steps", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=train_judges)
    p = sub.add_parser("alignment-tax", help="single-task and joint runs over seeds: the alignment-tax table",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--seeds", type=seed_list, default="0,1,2")
    p.add_argument("--epochs", type=int, default=DemoConfig.epochs)
    p.add_argument("--out", default="runs/alignment-tax")
    p.set_defaults(func=alignment_tax)
    from minirl.tinyworld import relation_rl
    p = sub.add_parser("composition-rl", help="composition RL where the base partly knows relation order, "
                       "against a coin-flip control (--reward coin): DIR/result.json",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=relation_rl.EXPERIMENT["model"], help="a tiny-world model folder")
    relation_rl.add_arguments(p, **relation_rl.EXPERIMENT)
    p.add_argument("--guidance-sweep", metavar="G1,G2,...", type=guidance_scales,
                   help="train nothing: the base's success at each guidance scale, to DIR/guidance.json")
    p.add_argument("--alignment-tax", metavar="S1,S2,...", type=seed_list,
                   help="train the three tasks jointly and each alone on these seeds: DIR/alignment_tax.md")
    p.set_defaults(func=composition_rl)
    args = parser.parse_args(argv)
    if getattr(args, "preset", None):  # the preset's values become the defaults; flags given still win
        from minirl.presets import preset
        train.set_defaults(**preset(args.preset))
        args = parser.parse_args(argv)
    from pickle import UnpicklingError

    from safetensors import SafetensorError
    try:
        args.func(args)
    except KeyboardInterrupt:
        if os.environ.get("RANK", "0") == "0":  # one line, from the main process of a launch
            print(interrupted(args, argv), file=sys.stderr)
        raise SystemExit(130) from None
    except (ValueError, OSError, SafetensorError, UnpicklingError) as e:
        # bad input, a file that cannot be read or written: the message says which and what is valid
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
