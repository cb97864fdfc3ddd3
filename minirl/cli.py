"""minirl's command line: train, make-tiny-sd, make-tiny-rewards, pretrain, demo, train-judges, alignment-tax.

    minirl make-tiny-sd runs/tiny-sd
    minirl train --pipeline runs/tiny-sd --reward jpeg_compressibility --prompts cat,dog --epochs 4 --out runs/x
    accelerate launch -m minirl.cli train ...      # several processes or GPUs

A run folder holds everything needed to reproduce it: config.json (every argument, the seed, the package
versions), metrics.jsonl, images/ and checkpoints/ (`--resume` continues from the latest).
"""

import argparse
import json
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
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--samples-per-epoch", type=int, default=16, help="per task, all processes together")
    p.add_argument("--sample-batch-size", type=int, default=8, help="per process")
    p.add_argument("--train-batch-size", type=int, default=4, help="per process, samples an optimizer step")
    p.add_argument("--train-micro-batch", type=int, default=0,
                   help="transitions per UNet call in training (0: the train batch size)")
    p.add_argument("--steps", type=int, default=20, help="denoising steps")
    p.add_argument("--eta", type=float, default=1.0, help="DDIM eta in (0, 1] (> 0: a stochastic policy)")
    p.add_argument("--guidance", type=float, default=5.0, help="classifier-free guidance scale")
    p.add_argument("--min-sigma", type=float, default=0.05, help="steps with sigma_t below it are not trained on")
    p.add_argument("--scheduler", choices=("ddim", "ddpm", "flow"), default=None,
                   help="the sampler: ddim or ddpm for SD 1.x/2.x, flow for SD3 (default: the pipeline's kind)")
    p.add_argument("--noise-level", type=float, default=None,
                   help="flow pipelines (SD3): the SDE's exploration noise, > 0 (default 0.7, Flow-GRPO's)")
    p.add_argument("--lora-rank", type=int, default=4, help="0: full fine-tuning of the UNet")
    p.add_argument("--timestep-fraction", type=float, default=1.0)
    p.add_argument("--inner-epochs", type=int, default=1)
    p.add_argument("--loss", choices=("ppo", "reinforce"), default="ppo")
    p.add_argument("--clip-range", type=float, default=1e-4)
    p.add_argument("--advantages", choices=("batch", "per_prompt", "group"), default="batch")
    p.add_argument("--adv-clip", type=float, default=5.0)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--kl-weight", type=float, default=0.0,
                   help="KL to the pretrained model (the UNet with LoRA disabled), as in DPOK (0.01)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/rl")
    p.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), default="no",
                   help="bf16 on GPUs; CPUs run fp32")
    p.add_argument("--tracker", default=None, help="an Accelerate tracker to log to too (tensorboard, wandb, all)")
    p.add_argument("--save-every", type=int, default=1)
    p.add_argument("--image-every", type=int, default=1)
    p.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    p.set_defaults(func=train)
    return p


def read_prompts(spec):
    if spec.startswith("@") and not Path(spec[1:]).is_file():
        raise FileNotFoundError(f"--prompts {spec!r}: no such file; give @FILE with one prompt a line")
    prompts = Path(spec[1:]).read_text().splitlines() if spec.startswith("@") else spec.split(",")
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


def build(args):
    """Accelerator, policy, tasks and pretraining data from the arguments, validated before anything heavy is
    loaded (the rewards' prompts are checked before any sampling)."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from minirl import sd
    from minirl.rewards.loading import device_and_dtype

    if args.pipeline is None:
        raise ValueError("give --pipeline (a hub id or a local folder of a diffusers pipeline) or a --preset")
    check_arguments(args)
    if args.pretrain_beta is None:
        args.pretrain_beta = 1.0 if args.pretrain_data else 0.0
    config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)},
                         verbose=True)  # the command line prints the batch arithmetic and the cost estimate
    if args.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ValueError("--mixed-precision fp16 is not supported on CPU (it overflows to NaN and many CPU "
                         "kernels lack it); use 'no' on CPU, 'bf16' on a GPU")
    dtype = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.mixed_precision]
    device_and_dtype("cuda" if torch.cuda.is_available() else "cpu", dtype)  # bf16 where the device runs it
    acc = Accelerator(mixed_precision=args.mixed_precision, log_with=args.tracker, project_dir=args.out)
    device = acc.device
    config.check(acc.num_processes, len(reward_specs(args.reward)))
    tasks = make_tasks(args, device, dtype)
    set_seed(args.seed)  # LoRA's random init below
    pipe = sd.load_pipeline(args.pipeline, dtype=dtype, device=device)
    args.scheduler = sd.use_scheduler(pipe, args.scheduler)
    if args.noise_level is not None and args.scheduler != "flow":
        raise ValueError(f"--noise-level is the flow SDE's (SD3 pipelines); a {args.scheduler} run's noise is --eta")
    denoiser = sd.denoiser(pipe)
    if args.lora_rank > 0:
        sd.add_lora(denoiser, args.lora_rank)
        for p in denoiser.parameters():
            if p.requires_grad:
                p.data = p.data.float()  # trainable weights in fp32, frozen ones in `dtype`
    else:
        denoiser.float().requires_grad_(True)
    noise = {} if args.noise_level is None else {"noise_level": args.noise_level}  # else the policy's default
    policy = sd.policy_from_pipeline(pipe, num_steps=args.steps, eta=args.eta, guidance_scale=args.guidance,
                                     min_sigma=args.min_sigma, **noise)
    pretrain_data = None
    if args.pretrain_data:
        from minirl.data import CaptionedImages
        pretrain_data = CaptionedImages(args.pretrain_data, sd.resolution(pipe),
                                        args.pretrain_batch_size or args.train_batch_size)
    return acc, policy, tasks, config, pretrain_data


def train(args):
    from minirl.runlog import plot_reward_curves
    from minirl.trainer import Trainer
    acc, policy, tasks, config, pretrain_data = build(args)
    trainer = Trainer(policy, tasks, config, accelerator=acc, pretrain_data=pretrain_data,
                      run_info={k: v for k, v in vars(args).items() if k != "func"})
    if args.resume:
        trainer.resume()
    trainer.train()
    if acc.is_main_process:
        print(f"reward curves: {plot_reward_curves(config.out)}")
    acc.end_training()


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
    alignment_tax([int(s) for s in args.seeds.split(",")], args.epochs, args.out)


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
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=DemoConfig.epochs)
    p.add_argument("--out", default="runs/alignment-tax")
    p.set_defaults(func=alignment_tax)
    args = parser.parse_args(argv)
    if getattr(args, "preset", None):  # the preset's values become the defaults; flags given still win
        from minirl.presets import preset
        train.set_defaults(**preset(args.preset))
        args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as e:  # bad input: the message says what and what is valid
        raise SystemExit(f"error: {e}")


if __name__ == "__main__":
    main()
