"""Stable Diffusion through diffusers: load a pipeline by hub id or local folder, add LoRA with peft, and
build a tiny random SD pipeline offline for tests and CPU demos.

The tiny pipeline follows diffusers' own `get_dummy_components()` for StableDiffusionPipeline (UNet (32, 64),
2 layers a block, 64 px images, 32x32 latents), with one change: the tokenizer is a real CLIP tokenizer
built from the BPE vocabulary that open_clip ships, so prompts tokenise exactly as with Stable Diffusion.
"""

import tempfile
from pathlib import Path

import torch
from diffusers import (AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline,
                       UNet2DConditionModel)
from transformers import CLIPTextConfig, CLIPTextModel

from minirl.policy import DiffusionPolicy
from minirl.tokenizer import clip_tokenizer

LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]  # the attention projections, as in DDPO
PIPELINE_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
TINY_UNET = {"block_out_channels": (32, 64), "cross_attention_dim": 32, "in_channels": 4, "out_channels": 4,
             "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
             "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D")}  # diffusers' tiny test pipeline's UNet
SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}  # SD 1.x/2.x's noise schedule
# its DDIM settings; steps_offset=1 as in its own configs (with 0, DDIM's last step has sigma_t = 0)
SD_DDIM = {**SD_BETAS, "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}


def sd_scheduler(**overrides):
    """A DDIMScheduler with Stable Diffusion's schedule (SD_DDIM), any of its settings overridden."""
    return DDIMScheduler(**{**SD_DDIM, **overrides})


def make_tiny_sd(folder, seed=0, sample_size=32):
    """Build a tiny random StableDiffusionPipeline offline and save it to `folder` (about 18 MB).

    sample_size: the latent size (images are twice as large); 32 is diffusers' test pipeline, 16 runs
    about four times faster, for unit tests.
    """
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_UNET, layers_per_block=2, sample_size=sample_size)
    scheduler = sd_scheduler()
    vae = AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"])
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = clip_tokenizer(tmp)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, vocab_size=len(tokenizer), hidden_size=32,
        intermediate_size=37, layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=5))
    pipe = StableDiffusionPipeline(unet=unet, scheduler=scheduler, vae=vae, text_encoder=text_encoder,
                                   tokenizer=tokenizer, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def load_pipeline(path_or_id, *, dtype=torch.float32, device="cpu"):
    """Load a Stable Diffusion 1.x/2.x pipeline from a local folder or a hub id.

    The pipeline's scheduler is replaced by a DDIMScheduler with the same config (SD ships PNDM, which has
    no stochastic step with a log-probability).
    """
    if device == "cpu" and dtype == torch.float16:
        raise ValueError("fp16 on CPU is not supported (many CPU kernels lack it, and it overflows to NaN "
                         "in attention); use dtype=torch.float32 on CPU, or bfloat16/float16 on a GPU")
    local = Path(path_or_id)
    if local.exists():
        missing = [p for p in PIPELINE_PARTS if not (local / p).is_dir()]
        if missing or not (local / "model_index.json").is_file():
            raise FileNotFoundError(
                f"pipeline folder {str(local)!r} is missing {missing or ['model_index.json']}; a Stable "
                f"Diffusion folder holds model_index.json and the subfolders {list(PIPELINE_PARTS)} "
                f"(write one with `minirl make-tiny-sd DIR` or `pipeline.save_pretrained(DIR)`)")
    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            path_or_id, dtype=dtype, safety_checker=None, requires_safety_checker=False)
    except OSError as e:
        raise FileNotFoundError(f"could not load pipeline {str(path_or_id)!r}: it is not a local folder, and "
                                f"the hub did not provide it (offline, or a wrong id): {e}") from e
    if not isinstance(pipe.scheduler, (DDIMScheduler, DDPMScheduler)):
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def resolution(pipe):
    """The image size in pixels a pipeline generates by default (latent size x the VAE's downsampling)."""
    return pipe.unet.config.sample_size * pipe.vae_scale_factor


def add_lora(unet, rank=4, alpha=None):
    """Freeze `unet` and add trainable LoRA adapters (peft) to its attention projections.

    alpha defaults to rank (scale 1): the adapter's up-projection starts at zero, so the policy starts
    exactly at the pretrained model, and the update is not shrunk by a small alpha/rank.
    """
    from peft import LoraConfig
    if rank < 1:
        raise ValueError(f"lora rank must be >= 1; got {rank}")
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha or rank, init_lora_weights="gaussian",
                                target_modules=LORA_TARGETS, lora_dropout=0.0))
    return unet


def policy_from_pipeline(pipe, **policy_kwargs):
    """A DiffusionPolicy over the parts of a StableDiffusionPipeline (latent space, through its VAE)."""
    pipe.vae.requires_grad_(False)
    pipe.text_encoder.requires_grad_(False)
    return DiffusionPolicy(pipe.unet, pipe.scheduler, pipe.text_encoder, pipe.tokenizer, vae=pipe.vae,
                           **policy_kwargs)

