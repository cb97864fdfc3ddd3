"""The LAION aesthetic predictor v2 ("improved aesthetic predictor", Schuhmann 2022): a linear MLP on the
L2-normalised CLIP ViT-L/14 image embedding, trained on SAC + LAION-Logos + AVA ratings; about 1-10 on the
AVA scale (Stable Diffusion 2 on PartiPrompts: about 6). DDPO's aesthetic reward. The prompt is not used.

Follows christophschuhmann/improved-aesthetic-predictor's `simple_inference.py` and kvablack/ddpo-pytorch's
`aesthetic_scorer.py`: CLIP ViT-L/14 image features (OpenAI's clip there, the transformers port in DDPO),
divided by their L2 norm, into MLP(768) = Linear 768-1024, Dropout 0.2, Linear 1024-128, Dropout 0.2,
Linear 128-64, Dropout 0.1, Linear 64-16, Linear 16-1 (no activations; `sac+logos+ava1-l14-linearMSE.pth`,
keys layers.0/2/4/6/7); differs in preprocessing the image tensors (not PIL), so it is differentiable.

Files: a folder holds a CLIP ViT-L/14 hub repository's files (config.json, model.safetensors or
pytorch_model.bin; the processor and tokenizer files are optional) plus the head HEAD at its top, as the tiny
twin does. With no path (HUB_ID), the CLIP comes from openai/clip-vit-large-patch14 and the head from the hub
repository HEAD_REPO, which hosts the original file.
"""

import torch
from torch import nn

from minirl.rewards import clip
from minirl.rewards.images import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, check_images
from minirl.rewards.loading import fetch, load_weights

HUB_ID = "openai/clip-vit-large-patch14"
HEAD = "sac+logos+ava1-l14-linearMSE.pth"
HEAD_REPO = "camenduru/improved-aesthetic-predictor"
FILES = [*clip.FILES, HEAD]
ARCHITECTURES = ["ViT-L/14"]  # the head reads its 768-d image embeddings
# the random head's last layer gain: the tiny twin's unit image embeddings lie within about 0.1 of their mean
# (clip.random_clip leans them one way); times 50, its scores spread by about 0.6 (std) across smooth images
HEAD_GAIN = 50.0


class AestheticHead(nn.Module):
    """The predictor's MLP (no activations: a linear map, trained with dropout); state dict keys layers.*."""

    def __init__(self, dim=768):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                                    nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))

    def forward(self, embeds):
        return self.layers(embeds)


class Aesthetic(clip.CLIPEmbedder):
    """aesthetic(image) = MLP(CLIP image embedding / its norm)."""

    crop_offset = round  # the predictor's embeddings came from OpenAI CLIP's preprocessing (torchvision's crop)

    def __init__(self, clip_model, tokenizer, head, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD):
        super().__init__(clip_model, tokenizer, mean, std)
        self.head = head

    def forward(self, images, prompts, metadata):
        check_images(images, "aesthetic")
        embeds = self.image_embeds(images)  # (B, D), unit norm
        scores = self.head(embeds.to(self.dtype)).squeeze(1).float()  # (B,)
        return scores, {"aesthetic": scores.detach().mean().item()}


def load(path_or_id, *, device, dtype, **options):
    """The predictor from a folder holding the CLIP's files and HEAD, or from the hub: HUB_ID's CLIP with
    HEAD_REPO's head (another hub id must hold both)."""
    clip.check_no_options(options, "aesthetic")
    if path_or_id == HUB_ID:  # the real files live in two repositories
        folder = fetch(HUB_ID, clip.FILES, "aesthetic", model_type="clip")
        head_file = fetch(HEAD_REPO, [HEAD], "aesthetic") / HEAD
    else:
        folder = fetch(path_or_id, FILES, "aesthetic", model_type="clip")
        head_file = folder / HEAD
    clip_model, tokenizer, mean, std = clip.load_clip(folder, "aesthetic", ARCHITECTURES)
    head = AestheticHead(clip_model.config.projection_dim)
    head.load_state_dict(load_weights(head_file, "aesthetic"))
    return Aesthetic(clip_model, tokenizer, head, mean, std).freeze(device, dtype)


def random_head(dim, seed=0):
    """The MLP with random weights that tell images apart: each layer variance-preserving (weights of std
    1/sqrt(fan_in), no bias), the last scaled by HEAD_GAIN. (With PyTorch's default init, every image scored
    within 1e-3 of the others: an agreement test could not fail on it.)"""
    head = AestheticHead(dim)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in head.layers:
            if isinstance(layer, nn.Linear):
                layer.weight.normal_(0, layer.in_features ** -0.5, generator=g)
                layer.bias.zero_()
        head.layers[-1].weight.mul_(HEAD_GAIN)
    return head


def random_model(real_size=False, seed=0):
    """The predictor with random weights: the real CLIP ViT-L/14 (about 430M parameters) and MLP(768), or the
    tiny twin (a tiny CLIP and the MLP on its 32-d embedding)."""
    clip_model = clip.random_clip("ViT-L/14", seed, tiny=not real_size)
    model = Aesthetic(clip_model, clip.offline_tokenizer(), random_head(clip_model.config.projection_dim, seed))
    model.freeze(torch.device("cpu"), torch.float32)
    with torch.no_grad():  # a mid-grey image scores 5.5, the middle of the AVA scale
        model.head.layers[-1].bias += 5.5 - model(torch.full((1, 3, 224, 224), 0.5), [""], None)[0]
    return model


def make_tiny(folder, seed=0):
    """Write a tiny random predictor to `folder`: a CLIP hub repository's files plus HEAD (torch.save of the
    MLP's state dict as a plain dict of tensors, keys layers.*, as the original file)."""
    model = random_model(False, seed)
    folder = clip.save_clip(model, folder)
    torch.save(dict(model.head.state_dict()), folder / HEAD)
    return folder
