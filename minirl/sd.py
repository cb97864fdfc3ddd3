"""Stable Diffusion through diffusers: load a pipeline (SD 1.x/2.x, or SD 3/3.5 with flow matching) by hub id
or local folder, add LoRA with peft, and build tiny random pipelines offline for tests and CPU demos.

The tiny pipelines follow diffusers' own `get_dummy_components()`: for StableDiffusionPipeline (UNet (32, 64),
2 layers a block, 64 px images, 32x32 latents) and for StableDiffusion3Pipeline (tests/pipelines/
stable_diffusion_3: a one-layer SD3Transformer2DModel with patch size 1, two CLIP text encoders with
projections, a one-block VAE, so images are as large as the latents). Changes: the tokenizers are real CLIP
tokenizers built from the BPE vocabulary that open_clip ships, so prompts tokenise exactly as with Stable
Diffusion; SD3 has no T5 (text_encoder_3=None, which the pipeline allows: it feeds zeros in its place), its
joint_attention_dim is 64 rather than 32 so that both CLIP encoders' token embeddings (32 + 32 wide) reach the
transformer (the pipeline pads them to T5's width, or crops them if narrower), and its scheduler has SD3's
shift=3.0.
"""

import json
import tempfile
from pathlib import Path

import torch
from diffusers import (AutoencoderKL, DDIMScheduler, DDPMScheduler, DiffusionPipeline,
                       FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline,
                       StableDiffusionPipeline, UNet2DConditionModel)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from minirl.policy import DiffusionPolicy
from minirl.tokenizer import clip_tokenizer

# the attention projections, as in DDPO; SD3's joint attention also projects the text stream (add_*, as Flow-GRPO)
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]
PIPELINE_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
SD3_PARTS = ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
SD3_T5_PARTS = ("text_encoder_3", "tokenizer_3")  # optional: needed when model_index.json names them
SCHEDULERS = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler, "flow": FlowMatchEulerDiscreteScheduler}
SD3_SHIFT = 3.0  # stabilityai/stable-diffusion-3(.5)'s scheduler_config.json
TINY_SD3 = {"patch_size": 1, "in_channels": 4, "num_layers": 1, "attention_head_dim": 8, "num_attention_heads": 4,
            "caption_projection_dim": 32, "joint_attention_dim": 64, "pooled_projection_dim": 64, "out_channels": 4}
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


def make_tiny_sd3(folder, seed=0, sample_size=32):
    """Build a tiny random StableDiffusion3Pipeline offline (no T5) and save it to `folder` (about 22 MB).

    sample_size: the latent size, which is also the image size (the tiny VAE does not downsample); 32 is
    diffusers' test pipeline (1,024 image tokens), 16 runs about four times faster, for unit tests.
    """
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(**TINY_SD3, sample_size=sample_size)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = clip_tokenizer(tmp)
    config = CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37,
        layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=5, hidden_act="gelu", projection_dim=32)
    vae = AutoencoderKL(
        sample_size=sample_size, in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1,
        latent_channels=4, norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False,
        shift_factor=0.0609, scaling_factor=1.5035)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=SD3_SHIFT), vae=vae,
        text_encoder=CLIPTextModelWithProjection(config), tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(config), tokenizer_2=tokenizer,
        text_encoder_3=None, tokenizer_3=None)
    pipe.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def load_pipeline(path_or_id, *, dtype=torch.float32, device="cpu"):
    """Load a Stable Diffusion 1.x/2.x or 3/3.5 pipeline from a local folder or a hub id.

    SD 1.x/2.x: the scheduler is replaced by a DDIMScheduler with the same config (SD ships PNDM, which has no
    stochastic step with a log-probability). SD3: its FlowMatchEulerDiscreteScheduler, whose ODE becomes
    Flow-GRPO's SDE (mdp.flow_sde_step_with_logprob); T5 (text_encoder_3) is loaded when the folder has it.
    """
    if device == "cpu" and dtype == torch.float16:
        raise ValueError("fp16 on CPU is not supported (many CPU kernels lack it, and it overflows to NaN "
                         "in attention); use dtype=torch.float32 on CPU, or bfloat16/float16 on a GPU")
    local = Path(path_or_id)
    if local.exists():
        _check_folder(local)
    try:
        index = DiffusionPipeline.load_config(path_or_id)  # model_index.json
        sd3 = _is_sd3_index(index)
        if sd3:  # a T5 the folder does not have is passed as None, which the pipeline allows
            no_t5 = {part: None for part in SD3_T5_PARTS if not _names(index, part)}
            pipe = StableDiffusion3Pipeline.from_pretrained(path_or_id, dtype=dtype, **no_t5)
        else:
            pipe = StableDiffusionPipeline.from_pretrained(
                path_or_id, dtype=dtype, safety_checker=None, requires_safety_checker=False)
    except OSError as e:
        raise FileNotFoundError(f"could not load pipeline {str(path_or_id)!r}: it is not a local folder, and "
                                f"the hub did not provide it (offline, or a wrong id): {e}") from e
    keep = (FlowMatchEulerDiscreteScheduler,) if sd3 else (DDIMScheduler, DDPMScheduler)
    if not isinstance(pipe.scheduler, keep):
        pipe.scheduler = keep[0].from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _is_sd3_index(index):
    return index.get("_class_name", "").startswith("StableDiffusion3")


def _names(index, part):
    """Whether model_index.json names a component for `part` (not [null, null])."""
    return (index.get(part) or [None])[0] is not None


def _check_folder(folder):
    """A FileNotFoundError naming what a pipeline folder lacks, before anything is loaded."""
    index_file = folder / "model_index.json"
    index = json.loads(index_file.read_text()) if index_file.is_file() else {}
    if _is_sd3_index(index):
        parts = SD3_PARTS + tuple(part for part in SD3_T5_PARTS if _names(index, part))
    else:
        parts = PIPELINE_PARTS
    missing = [p for p in parts if not (folder / p).is_dir()] + ([] if index_file.is_file() else ["model_index.json"])
    if missing:
        raise FileNotFoundError(
            f"pipeline folder {str(folder)!r} is missing {missing}; a Stable Diffusion folder holds "
            f"model_index.json and the subfolders {list(PIPELINE_PARTS)}, an SD3 one {list(SD3_PARTS)} (and "
            f"{list(SD3_T5_PARTS)} when model_index.json names T5). Write one with `minirl make-tiny-sd [--sd3] DIR` "
            f"or `pipeline.save_pretrained(DIR)`")


def is_sd3(pipe):
    return isinstance(pipe, StableDiffusion3Pipeline)


def denoiser(pipe):
    """The network the policy trains: SD's UNet or SD3's transformer."""
    return pipe.transformer if is_sd3(pipe) else pipe.unet


def use_scheduler(pipe, name=None):
    """Sample with the scheduler `name` ("ddim" or "ddpm" for SD 1.x/2.x, from the pipeline's config; "flow" for
    SD3); None: the pipeline's kind ("flow" for SD3, "ddim" otherwise). Returns the name."""
    valid = ("flow",) if is_sd3(pipe) else ("ddim", "ddpm")
    name = name or valid[0]
    if name not in valid:
        raise ValueError(f"--scheduler {name} does not fit a {type(pipe).__name__}; valid: {', '.join(valid)} "
                         f"(flow matching (SD3) samples with 'flow', SD 1.x/2.x with 'ddim' or 'ddpm')")
    if not isinstance(pipe.scheduler, SCHEDULERS[name]):
        pipe.scheduler = SCHEDULERS[name].from_config(pipe.scheduler.config)
    return name


def resolution(pipe):
    """The image size in pixels a pipeline generates by default (latent size x the VAE's downsampling)."""
    return denoiser(pipe).config.sample_size * pipe.vae_scale_factor


def add_lora(unet, rank=4, alpha=None, target_modules=LORA_TARGETS):
    """Freeze `unet` (SD's UNet or SD3's transformer) and add trainable LoRA adapters (peft) to its attention
    projections (`target_modules`: module names, or a regular expression, as peft's LoraConfig takes them).

    alpha defaults to rank (scale 1): the adapter's up-projection starts at zero, so the policy starts
    exactly at the pretrained model, and the update is not shrunk by a small alpha/rank.
    """
    from peft import LoraConfig
    if rank < 1:
        raise ValueError(f"lora rank must be >= 1; got {rank}")
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha or rank, init_lora_weights="gaussian",
                                target_modules=target_modules, lora_dropout=0.0))
    return unet


def policy_from_pipeline(pipe, *, resolution=None, max_sequence_length=128, **policy_kwargs):
    """A DiffusionPolicy over the parts of a StableDiffusionPipeline or StableDiffusion3Pipeline (latent space,
    through its VAE), sampling images of `resolution` pixels a side (default: the model's own, `resolution(pipe)`;
    SD 3.5 medium's config says 1024, Flow-GRPO trains it at 512). SD3's prompts are encoded by its pipeline's
    encode_prompt: CLIP-L and CLIP-G (77 tokens) and T5's max_sequence_length tokens (zeros without T5); 128 as
    Flow-GRPO (the pipeline's default is 256)."""
    if resolution is not None:
        # the VAE's factor, and SD3's transformer cuts the latent into patches of patch_size
        step = pipe.vae_scale_factor * (denoiser(pipe).config.patch_size if is_sd3(pipe) else 1)
        if not (isinstance(resolution, int) and resolution >= step and resolution % step == 0):
            raise ValueError(f"resolution must be a multiple of {step} (the VAE's factor"
                             f"{' times the patch size' if is_sd3(pipe) else ''}) >= {step}; got {resolution!r}")
        largest = getattr(denoiser(pipe).config, "pos_embed_max_size", None)  # SD3: patches a side it embeds
        if largest is not None and resolution // step > largest:
            raise ValueError(f"resolution {resolution} is {resolution // step} patches a side; the transformer embeds "
                             f"positions for at most {largest} (resolution <= {largest * step})")
        policy_kwargs["latent_size"] = resolution // pipe.vae_scale_factor
    pipe.vae.requires_grad_(False)
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        if getattr(pipe, name, None) is not None:
            getattr(pipe, name).requires_grad_(False)
    if not is_sd3(pipe):
        return DiffusionPolicy(pipe.unet, pipe.scheduler, pipe.text_encoder, pipe.tokenizer, vae=pipe.vae,
                               **policy_kwargs)

    def encode_prompt(prompts):  # -> (embeddings (B, L, D), pooled (B, P))
        embeds, _, pooled, _ = pipe.encode_prompt(prompts, None, None, device=pipe.text_encoder.device,
                                                  do_classifier_free_guidance=False,
                                                  max_sequence_length=max_sequence_length)
        return embeds, pooled

    return DiffusionPolicy(pipe.transformer, pipe.scheduler, pipe.text_encoder, pipe.tokenizer, vae=pipe.vae,
                           prompt_encoder=encode_prompt, **policy_kwargs)

