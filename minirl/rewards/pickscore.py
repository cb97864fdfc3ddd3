"""PickScore v1 (Kirstain et al. 2023, "Pick-a-Pic"): CLIP ViT-H/14 fine-tuned on human preferences between
generated images; the reward is logit_scale.exp() * cos(image, prompt), about 21-24 on real generations
(Flow-GRPO divides it by 26).

Follows the PickScore model card's recipe: laion/CLIP-ViT-H-14-laion2B-s32B-b79K's processor (shortest side 224
bicubic, centre crop, OpenAI mean/std; text at most 77 tokens), get_image_features / get_text_features,
normalise, logit_scale.exp() * text @ image.T; differs in preprocessing the image tensors (not PIL), so it is
differentiable and batched over (image, prompt) pairs.
"""

import torch

from minirl.rewards import clip
from minirl.rewards.images import check_images
from minirl.rewards.loading import fetch

HUB_ID = "yuvalkirstain/PickScore_v1"
FILES = clip.FILES  # its laion processor's tokenizer and mean/std are CLIP's own: built here, not fetched
ARCHITECTURES = ["ViT-H/14"]


class PickScore(clip.CLIPEmbedder):
    """reward = logit_scale.exp() * cos(image embedding, prompt embedding)."""

    def forward(self, images, prompts, metadata):
        check_images(images, "pickscore")
        clip.check_prompts(prompts, len(images), "pickscore")
        cos = (self.image_embeds(images) * self.text_embeds(prompts)).sum(-1)  # (B,)
        scores = self.logit_scale() * cos  # (B,)
        return scores, {"pickscore": scores.detach().mean().item()}


def load(path_or_id, *, device, dtype, **options):
    """PickScore from a folder with the hub repository's config.json and weights, or the hub repository."""
    clip.check_no_options(options, "pickscore")
    folder = fetch(path_or_id, FILES, "pickscore", model_type="clip")
    return PickScore(*clip.load_clip(folder, "pickscore", ARCHITECTURES)).freeze(device, dtype)


def random_model(real_size=False, seed=0):
    """PickScore with random weights: the real CLIP ViT-H/14 (about 1B parameters) or the tiny twin."""
    model = PickScore(clip.random_clip("ViT-H/14", seed, tiny=not real_size), clip.offline_tokenizer())
    return model.freeze(torch.device("cpu"), torch.float32)


def make_tiny(folder, seed=0):
    """Write a tiny random PickScore to `folder` as a CLIP hub repository (clip.save_clip)."""
    return clip.save_clip(random_model(False, seed), folder)
