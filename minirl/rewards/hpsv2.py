"""HPSv2 and HPSv2.1 (Human Preference Score v2, Wu et al. 2023): an open_clip ViT-H/14 fine-tuned on human
preference pairs (HPD v2); an image's score for a prompt is the cosine of their CLIP features.

Follows tgxs002/HPSv2's `hpsv2/img_score.py` (open_clip's "ViT-H-14", the HPS state dict loaded strictly from
`checkpoint['state_dict']`, score = diag of normalised image features @ text features.T, no logit scale) and
`hpsv2/src/open_clip/transform.py` (ToTensor, then ResizeMaxSize: the longer side to 224, bicubic, zero-padded
to a centred square; then OpenAI mean/std). Differs in:
- it runs on (B, 3, H, W) tensors in [0, 1] and is differentiable with respect to them; the resize is torch's
  antialiased bicubic, the kernel torchvision >= 0.17 applies on the official tensor path (older torchvision
  resized tensors without antialiasing), here clamped to [0, 1] where the official path keeps the bicubic
  overshoot;
- an image whose longer side is already 224 is still padded to a square (the official ResizeMaxSize skips
  both resize and pad at scale 1, so a 224 x 160 image reaches the ViT unpadded and fails);
- fp32 or bf16 throughout, where img_score.py runs under CUDA fp16 autocast.

Scores are about 0.25-0.33 on real images, and compare meaningfully only between images of the SAME prompt
(HPSv2 issue #9): use them within a prompt's group (per-prompt advantages), not across prompts.

Files: the hub repository xswu/HPSv2 holds only the checkpoints (`HPS_v2.1_compressed.pt`,
`HPS_v2_compressed.pt`: torch.save of {'state_dict': ...}, keys without a 'module.' prefix), no architecture
config. The architecture is open_clip's built-in "ViT-H-14" config, unless the folder also holds an
`open_clip_config.json` ({"model_cfg": ..., "preprocess_cfg": ...}, the layout of open_clip's hf-hub
repositories), as the tiny twin does. It is built with random weights (never fetching the LAION base weights
that `create_model_and_transforms('ViT-H-14', 'laion2B-s32B-b79K')` would download first), then the HPS state
dict replaces them, read with torch.load(weights_only=True).
"""

import json
from pathlib import Path

import open_clip
import torch

from minirl.rewards.images import (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, check_images, normalize,
                                   resize_longest_side_and_pad)
from minirl.rewards.loading import RewardModel, fetch, load_weights, read_json

HUB_ID = "xswu/HPSv2"
VERSIONS = {"v2.1": "HPS_v2.1_compressed.pt", "v2.0": "HPS_v2_compressed.pt"}  # hpsv2/utils.py's hps_version_map
FILES = [VERSIONS["v2.1"]]  # the default version's checkpoint; version="v2.0" needs the other one instead
CONFIG = "open_clip_config.json"  # optional: the architecture, when it is not the real ViT-H-14
TINY_CONFIG = {
    "model_cfg": {"embed_dim": 32,
                  "vision_cfg": {"image_size": 224, "layers": 2, "width": 32, "head_width": 16, "patch_size": 14},
                  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}},
    "preprocess_cfg": {"mean": list(OPENAI_CLIP_MEAN), "std": list(OPENAI_CLIP_STD), "interpolation": "bicubic",
                       "resize_mode": "longest", "fill_color": 0},
}


class HPSv2(RewardModel):
    """HPS(image, prompt) = cos(f_image, f_text) of the HPS-tuned open_clip model, one prompt per image."""

    def __init__(self, clip):
        super().__init__()
        self.clip = clip
        self.tokenizer = open_clip.get_tokenizer("ViT-H-14", context_length=clip.context_length)

    def forward(self, images, prompts, metadata):
        check_images(images, "hpsv2")
        if not (isinstance(prompts, (list, tuple)) and len(prompts) == len(images)
                and all(isinstance(p, str) for p in prompts)):
            raise ValueError(f"hpsv2 takes a list of {len(images)} prompt strings, one per image; got {prompts!r}")
        pixels = preprocess(images, self.clip.visual.image_size[0])                     # (B, 3, 224, 224)
        tokens = self.tokenizer(list(prompts)).to(self.device)                          # (B, 77)
        f_image = self.clip.encode_image(pixels.to(self.dtype), normalize=True)         # (B, D)
        f_text = self.clip.encode_text(tokens, normalize=True)                          # (B, D)
        scores = (f_image.float() * f_text.float()).sum(-1)                             # (B,) diag(I @ T.T)
        return scores, {"hpsv2": scores.detach().mean().item()}


def preprocess(images, size):
    """HPSv2's preprocessing on tensors: longer side to `size` (bicubic), zero-pad to a centred square, OpenAI
    mean/std. fp32."""
    return normalize(resize_longest_side_and_pad(images.float(), size, fill=0.0))


def load(path_or_id, *, device, dtype, version="v2.1", **options):
    """HPSv2.1 (version="v2.1", the default) or HPSv2 ("v2.0") from a folder or the hub repository HUB_ID."""
    if version not in VERSIONS:
        raise ValueError(f"hpsv2 version must be one of {sorted(VERSIONS)}; got {version!r}")
    if options:
        raise ValueError(f"hpsv2 takes only the option version ({' or '.join(map(repr, VERSIONS))}); "
                         f"got {sorted(options)}")
    file = VERSIONS[version]
    folder = fetch(path_or_id, [file], "hpsv2")
    config = folder / CONFIG
    model_cfg = read_json(config, "hpsv2")["model_cfg"] if config.is_file() else vit_h_14()
    clip = random_clip(model_cfg)
    checkpoint = load_weights(folder / file, "hpsv2")
    if "state_dict" not in checkpoint:
        raise ValueError(f"hpsv2 checkpoint {str(folder / file)!r} must be a dict with key 'state_dict' (as "
                         f"torch.save({{'state_dict': ...}}) writes it); got keys {sorted(checkpoint)[:5]}")
    clip.load_state_dict(checkpoint["state_dict"])
    return HPSv2(clip).freeze(device, dtype)


def vit_h_14():
    """open_clip's built-in ViT-H-14 configuration (what HPSv2 fine-tuned)."""
    return open_clip.get_model_config("ViT-H-14")


def random_clip(model_cfg, seed=0):
    """An open_clip CLIP of `model_cfg` with random weights (as open_clip initialises them), never fetched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return open_clip.CLIP(**model_cfg)


def random_model(real_size=False, seed=0):
    """HPSv2 with random weights: the real ViT-H-14 (about 1B parameters) or the tiny twin's architecture."""
    clip = random_clip(vit_h_14() if real_size else TINY_CONFIG["model_cfg"], seed)
    return HPSv2(clip).freeze(torch.device("cpu"), torch.float32)


def make_tiny(folder, seed=0):
    """Write a tiny random HPSv2 to `folder` as the hub repository lays it out (both checkpoints, saved as
    {'state_dict': ...}; v2.0 from seed + 1 so that the versions differ), plus the tiny architecture as
    open_clip_config.json. open_clip reads it: create_model(f"local-dir:{folder}") and load_state_dict."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG).write_text(json.dumps(TINY_CONFIG, indent=2))
    for i, file in enumerate(VERSIONS.values()):
        torch.save({"state_dict": random_model(False, seed + i).clip.state_dict()}, folder / file)
    return folder
