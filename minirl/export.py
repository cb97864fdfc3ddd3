"""A run's trained model, out of its folder: as a policy to sample from (`minirl sample`), or in the layout stock
diffusers loads (`minirl export`): LoRA weights for `pipe.load_lora_weights(FOLDER)`, or the fine-tuned UNet (SD3:
transformer) for `UNet2DConditionModel.from_pretrained(FOLDER / "unet")`.

    minirl sample --run runs/jpeg --prompts "a cat,a dog" --out runs/jpeg-samples
    minirl export --run runs/jpeg --out runs/jpeg-lora

A run's config.json says how to rebuild its policy: the pipeline (the command line's --pipeline, or the folder the
denoiser was loaded from) and the policy's LoRA and sampler, which the trainer records from the policy itself
(`run.policy`); a checkpoint holds the trained weights.
"""

import json
from pathlib import Path

import torch

from minirl import checkpoint, sd
from minirl.tasks import seed_for

LORA_FILE = "pytorch_lora_weights.safetensors"  # the name `load_lora_weights(folder)` looks for


def read_run(run):
    """A run folder's config.json, checked to be a minirl run's with its policy recorded."""
    path = Path(run) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"--run {str(run)!r} holds no config.json: give a run folder (the --out of "
                                f"`minirl train`, or a Trainer's config.out)")
    record = json.loads(path.read_text())
    if not isinstance(record, dict) or "policy" not in record.get("run", {}):
        raise ValueError(f"{str(path)!r} records no policy (a run of an older minirl, or not a run's config.json); "
                         f"its sampler and LoRA cannot be rebuilt")
    return record


def pipeline_of(record):
    """The pipeline a run fine-tuned: what its command line named, else the pipeline folder its denoiser came from."""
    if record["run"].get("pipeline"):
        return record["run"]["pipeline"]
    loaded_from = record["run"]["policy"].get("loaded_from")
    folder = Path(loaded_from).parent if loaded_from else None
    if folder is None or not (folder / "model_index.json").is_file():
        raise ValueError(f"the run does not say which pipeline it fine-tuned (its denoiser came from "
                         f"{loaded_from!r}); give it with --pipeline")
    return str(folder)


def load_trained(run, checkpoint_folder=None, pipeline=None, device="cpu", dtype=torch.float32):
    """(pipeline, policy) of a run: its pipeline (`pipeline` overrides the one the run names) with the trained
    weights of `checkpoint_folder` (default: the run's newest complete checkpoint), and a policy with the run's
    sampler (scheduler, steps, eta or noise level, guidance, min_sigma) and image size."""
    record = read_run(run)
    settings = record["run"]["policy"]
    if checkpoint_folder is None:
        checkpoint_folder, state, notes = checkpoint.load_newest(Path(run) / "checkpoints")
        for note in notes:
            print(note)
    else:
        state = checkpoint.load_state(checkpoint_folder)
    pipe = sd.load_pipeline(pipeline or pipeline_of(record), dtype=dtype, device=device)
    sd.use_scheduler(pipe, {cls.__name__: name for name, cls in sd.SCHEDULERS.items()}[settings["scheduler"]])
    denoiser = sd.denoiser(pipe)
    lora = settings["lora"]
    if lora is not None:
        sd.add_lora(denoiser, lora["rank"], lora["alpha"], lora["target_modules"])
    else:
        denoiser.requires_grad_(True)  # the run trained the whole denoiser
    params = checkpoint.trainable_params(denoiser, state["trainable"], checkpoint_folder,
                                         f"was --pipeline the pipeline the run fine-tuned ({type(denoiser).__name__})?")
    with torch.no_grad():
        for name, value in state["trainable"].items():
            params[name].copy_(value)
    sampler = {k: settings[k] for k in ("eta", "noise_level") if k in settings}
    window = {"sde_window": tuple(settings["sde_window"])} if settings.get("sde_window") else {}
    policy = sd.policy_from_pipeline(pipe, num_steps=settings["steps"], guidance_scale=settings["guidance_scale"],
                                     min_sigma=settings["min_sigma"], latent_size=settings["latent_size"], **sampler,
                                     **window)
    return pipe, policy


def sample(policy, prompts, out, images_per_prompt=1, seed=0, batch_size=8):
    """Write `images_per_prompt` images of each prompt, drawn by the policy's sampler (image j of prompt i from the
    seed (seed, i, j)), as PNGs in `out`, with index.json listing each file's prompt and generator seed. Returns
    the index."""
    from torchvision.utils import save_image
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(i, j, prompt) for i, prompt in enumerate(prompts) for j in range(images_per_prompt)]
    index = []
    for b in range(0, len(jobs), batch_size):
        batch = jobs[b:b + batch_size]
        seeds = [seed_for(seed, "sample", i, j) for i, j, _ in batch]
        trajectory = policy.rollout([prompt for *_, prompt in batch], [torch.Generator().manual_seed(s) for s in seeds])
        for (i, j, prompt), s, image in zip(batch, seeds, policy.decode(trajectory.latents[:, -1])):
            index.append({"prompt": prompt, "seed": s, "file": f"{i:04d}_{j:02d}.png"})
            save_image(image.float().cpu(), out / index[-1]["file"])
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return index


def export(pipe, out):
    """Write the pipeline's fine-tuned denoiser in diffusers' layout: its LoRA as out/pytorch_lora_weights.safetensors
    (with the adapter's config, alpha included, in the file's metadata), or the whole UNet / transformer as
    out/unet or out/transformer. Returns the file or folder written."""
    denoiser = sd.denoiser(pipe)
    name = "transformer" if sd.is_sd3(pipe) else "unet"
    if getattr(denoiser, "peft_config", None):
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict
        layers = get_peft_model_state_dict(denoiser)
        if name == "unet":  # the UNet loader reads diffusers' key names (its LoRA scripts convert); SD3's, peft's
            layers = convert_state_dict_to_diffusers(layers)
        adapter = denoiser.peft_config["default"].to_dict()  # its rank, alpha and targets, which the loader reads
        type(pipe).save_lora_weights(out, **{f"{name}_lora_layers": layers, f"{name}_lora_adapter_metadata": adapter})
        return Path(out) / LORA_FILE
    denoiser.save_pretrained(Path(out) / name, safe_serialization=True)
    return Path(out) / name
