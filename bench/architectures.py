"""Stable Diffusion 1.5, 2 base and 3.5 medium as diffusers pipelines with random weights, built offline from
their hub repositories' config.json files (the architecture alone decides what a pass costs), and tiny twins of
the same classes for a CPU smoke run (bench/gpu_check.py).

    SD 1.5         stable-diffusion-v1-5/stable-diffusion-v1-5: UNet 860M, CLIP ViT-L/14 text (123M), VAE
    SD 2 base      stabilityai/stable-diffusion-2-base: UNet 865M (linear projections, more heads), the text half
                   of OpenCLIP ViT-H/14 without its last layer (23 layers, 340M), the same VAE
    SD 3.5 medium  stabilityai/stable-diffusion-3.5-medium: MMDiT-X of 2.2B parameters and a 0.2B position table
                   (dual attention in layers 0-12, RMS q/k norms), CLIP ViT-L/14 and OpenCLIP bigG/14 text with
                   projections (124M, 695M), T5 v1.1 XXL's encoder (4.8B), a 16-channel VAE

Two changes from the hub. Every tokenizer is CLIP's, built from open_clip's vocabulary (minirl.tokenizer), T5's
too (its SentencePiece model is not on this machine): T5's vocabulary is widened to CLIP's 49,408 ids, so the
encoder runs the same layers on the same 128 tokens (token ids are all a forward pass needs). And SD 3.5
medium's transformer gets sample_size 64 where its config says 128: minirl's policy and the pipeline take the
image size from it, and Flow-GRPO trains at 512 px (at 128 both sample 1024 px).
The schedulers are minirl's: SD's DDIM settings (minirl.sd.sd_scheduler; the hub ships PNDM, which
minirl.sd.load_pipeline replaces the same way) and SD3's flow matching with shift 3.
"""

import tempfile

import torch
from diffusers import (AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel,
                       StableDiffusion3Pipeline, StableDiffusionPipeline, UNet2DConditionModel)
from diffusers.utils import logging as diffusers_logging
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

from minirl import sd
from minirl.tokenizer import clip_tokenizer

# text encoders (CLIPTextConfig / T5Config fields)
CLIP_L = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
          "hidden_act": "quick_gelu", "projection_dim": 768}                    # openai/clip-vit-large-patch14
OPENCLIP_H = {"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 23,
              "hidden_act": "gelu", "projection_dim": 512}                      # SD 2's text_encoder
OPENCLIP_BIGG = {"hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 20, "num_hidden_layers": 32,
                 "hidden_act": "gelu", "projection_dim": 1280}                  # SD3's text_encoder_2
T5_XXL = {"d_model": 4096, "d_ff": 10240, "d_kv": 64, "num_heads": 64, "num_layers": 24,
          "feed_forward_proj": "gated-gelu"}                       # google/t5-v1_1-xxl's encoder: SD3's text_encoder_3
# VAEs and denoisers (the diffusers classes' arguments)
SD_VAE = {"block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
          "up_block_types": ("UpDecoderBlock2D",) * 4, "layers_per_block": 2, "latent_channels": 4, "sample_size": 512}
SD3_VAE = {**SD_VAE, "latent_channels": 16, "sample_size": 1024, "scaling_factor": 1.5305, "shift_factor": 0.0609,
           "use_quant_conv": False, "use_post_quant_conv": False}
SD15_UNET = {"sample_size": 64, "cross_attention_dim": 768, "attention_head_dim": 8, "layers_per_block": 2,
             "block_out_channels": (320, 640, 1280, 1280),
             "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
             "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3}
SD2_UNET = {**SD15_UNET, "cross_attention_dim": 1024, "attention_head_dim": (5, 10, 20, 20),
            "use_linear_projection": True}
SD35_MEDIUM = {"sample_size": 64, "patch_size": 2, "in_channels": 16, "out_channels": 16, "num_layers": 24,
               "attention_head_dim": 64, "num_attention_heads": 24, "joint_attention_dim": 4096,
               "caption_projection_dim": 1536, "pooled_projection_dim": 2048, "pos_embed_max_size": 384,
               "dual_attention_layers": tuple(range(13)), "qk_norm": "rms_norm"}

# the tiny twins: diffusers' test components (minirl.sd's tiny pipelines), each flag of the real one kept
TINY_TEXT = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2,
             "hidden_act": "gelu", "projection_dim": 32}
TINY_VAE = {"block_out_channels": (32, 64), "down_block_types": ("DownEncoderBlock2D",) * 2,
            "up_block_types": ("UpDecoderBlock2D",) * 2, "layers_per_block": 1, "latent_channels": 4}
TINY_UNET = {**sd.TINY_UNET, "sample_size": 8, "layers_per_block": 1}
TINY_SD3 = {**sd.TINY_SD3, "sample_size": 8, "patch_size": 2, "dual_attention_layers": (0,), "qk_norm": "rms_norm",
            "num_layers": 2}

MODELS = {
    "sd15": {"label": "SD 1.5", "unet": SD15_UNET, "text_encoder": CLIP_L, "vae": SD_VAE},
    "sd2": {"label": "SD 2 base", "unet": SD2_UNET, "text_encoder": OPENCLIP_H, "vae": SD_VAE},
    "sd35m": {"label": "SD 3.5 medium", "transformer": SD35_MEDIUM, "text_encoder": CLIP_L,
              "text_encoder_2": OPENCLIP_BIGG, "text_encoder_3": T5_XXL, "vae": SD3_VAE},
}
TINY = {
    "sd15": {"unet": TINY_UNET, "text_encoder": TINY_TEXT, "vae": TINY_VAE},
    "sd2": {"unet": {**TINY_UNET, "attention_head_dim": (2, 4), "use_linear_projection": True},
            "text_encoder": TINY_TEXT, "vae": TINY_VAE},
    "sd35m": {"transformer": TINY_SD3, "text_encoder": TINY_TEXT, "text_encoder_2": TINY_TEXT,
              "text_encoder_3": {"d_model": 64, "d_ff": 37, "d_kv": 8, "num_heads": 4, "num_layers": 2,
                                 "feed_forward_proj": "gated-gelu"},
              "vae": {**TINY_VAE, "sample_size": 16, "scaling_factor": 1.5035, "shift_factor": 0.0609}},
}
_TOKENIZER = []  # built once a process


def tokenizer():
    if not _TOKENIZER:
        with tempfile.TemporaryDirectory() as tmp:
            _TOKENIZER.append(clip_tokenizer(tmp))
    return _TOKENIZER[0]


def build(name, device, dtype, tiny=False):
    """The pipeline `name` (a key of MODELS) with random weights, on `device` in `dtype`, its progress bar off."""
    spec = (TINY if tiny else MODELS)[name]
    tok = tokenizer()
    ids = {"vocab_size": len(tok), "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
           "pad_token_id": tok.pad_token_id}

    def text_encoder(cls, key):
        return cls(CLIPTextConfig(**ids, **spec[key]))

    with torch.device(device):  # weights are drawn where they run: seconds for billions of them on a GPU
        vae = AutoencoderKL(**spec["vae"])
        if "transformer" in spec:
            pipe = StableDiffusion3Pipeline(
                transformer=SD3Transformer2DModel(**spec["transformer"]),
                scheduler=FlowMatchEulerDiscreteScheduler(shift=sd.SD3_SHIFT), vae=vae,
                text_encoder=text_encoder(CLIPTextModelWithProjection, "text_encoder"), tokenizer=tok,
                text_encoder_2=text_encoder(CLIPTextModelWithProjection, "text_encoder_2"), tokenizer_2=tok,
                text_encoder_3=T5EncoderModel(T5Config(vocab_size=len(tok), **spec["text_encoder_3"])),
                tokenizer_3=tok)
        else:
            pipe = StableDiffusionPipeline(
                unet=UNet2DConditionModel(**spec["unet"]), scheduler=sd.sd_scheduler(), vae=vae,
                text_encoder=text_encoder(CLIPTextModel, "text_encoder"), tokenizer=tok, safety_checker=None,
                feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # a cast warns for every model, though none keeps fp32 modules
    try:
        return pipe.to(device=device, dtype=dtype)  # and any buffer made off the device
    finally:
        diffusers_logging.set_verbosity(verbosity)
