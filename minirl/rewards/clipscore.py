"""CLIPScore (Hessel et al. 2021, "CLIPScore: A Reference-free Evaluation Metric for Image Captioning"):
CLIP-S(image, prompt) = 2.5 * max(cos(image, "A photo depicts " + prompt), 0) with CLIP ViT-B/32, in [0, 2.5];
about 0.6-0.9 for matching real image-caption pairs (cosines 0.25-0.35).

Follows jmhessel/clipscore's `clipscore.py` (get_clip_score: w = 2.5, the prefix "A photo depicts ", CLIP's
224 px bicubic resize, centre crop, OpenAI mean/std, tokens truncated to 77), with the weights of the hub's
transformers port of ViT-B/32; differs in preprocessing the image tensors (not PIL), so it is differentiable.
Not torchmetrics' CLIPScore: that is max(100 * cos, 0) averaged over the batch before the max, with ViT-L/14
by default and no prefix, i.e. per sample 40x this score, on a different text.

max(., 0) has zero gradient where cos < 0: an image whose embedding points away from its prompt's gets no
signal. A trained CLIP rarely gives negative cosines; the tiny twin is built so that it does not either
(clip.random_clip).
"""

import torch

from minirl.rewards import clip
from minirl.rewards.images import check_images
from minirl.rewards.loading import fetch

HUB_ID = "openai/clip-vit-base-patch32"
FILES = clip.FILES
PREFIX = "A photo depicts "  # Hessel et al.'s prompt prefix
W = 2.5                      # Hessel et al.'s rescaling weight


class CLIPScore(clip.CLIPEmbedder):
    """CLIP-S = W * max(cos(image embedding, embedding of PREFIX + prompt), 0)."""

    crop_offset = round  # Hessel et al.'s preprocessing is OpenAI CLIP's: torchvision's CenterCrop

    def forward(self, images, prompts, metadata):
        check_images(images, "clipscore")
        clip.check_prompts(prompts, len(images), "clipscore")
        cos = (self.image_embeds(images) * self.text_embeds([PREFIX + p for p in prompts])).sum(-1)  # (B,)
        scores = W * cos.clamp(min=0)  # (B,)
        return scores, {"clipscore": scores.detach().mean().item()}


def load(path_or_id, *, device, dtype, **options):
    """CLIPScore's CLIP from a folder with a CLIP hub repository's config.json and weights, or the hub
    repository (HUB_ID, or another CLIP such as openai/clip-vit-large-patch14)."""
    clip.check_no_options(options, "clipscore")
    folder = fetch(path_or_id, FILES, "clipscore", model_type="clip")
    return CLIPScore(*clip.load_clip(folder, "clipscore")).freeze(device, dtype)


def random_model(real_size=False, seed=0):
    """CLIPScore with random weights: the real CLIP ViT-B/32 (about 150M parameters) or the tiny twin."""
    model = CLIPScore(clip.random_clip("ViT-B/32", seed, tiny=not real_size), clip.offline_tokenizer())
    return model.freeze(torch.device("cpu"), torch.float32)


def make_tiny(folder, seed=0):
    """Write a tiny random CLIPScore CLIP to `folder` as a CLIP hub repository (clip.save_clip)."""
    return clip.save_clip(random_model(False, seed), folder)
