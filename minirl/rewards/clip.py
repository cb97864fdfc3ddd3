"""What the CLIP-based rewards share (PickScore, CLIPScore, the LAION aesthetic predictor, the parity
classifier): a transformers `CLIPModel` read from a folder with its hub repository's files, L2-normalised
image and text embeddings computed from (B, 3, H, W) tensors, and tiny random twins written in the hub's file
layout.

Images go through CLIP's processor on tensors (`images.clip_preprocess`: shorter side to the vision tower's
size, bicubic; centre crop, its offset floored as CLIPProcessor does unless a reward's own recipe rounds it; the
folder's preprocessor_config.json mean/std, else OpenAI's), so the embeddings are differentiable with respect to
the pixels. Text goes through the folder's tokenizer or, where the folder has none (a hub repository fetched for
its weights only), the CLIP BPE tokenizer built offline by `minirl.tokenizer.clip_tokenizer`, which tokenises as
every OpenAI-BPE CLIP does (laion's ViT-H/14 included).
A folder's config.json says which CLIP it holds (`architecture`): a reward that needs one (PickScore's
ViT-H/14, the aesthetic head's ViT-L/14) refuses another before reading its weights. transformers is imported
only where a model is built, so that `minirl.rewards` imports fast.
Follows transformers' CLIPModel.get_image_features / get_text_features and CLIPProcessor; differs in running
the processor's geometry on tensors (each reward's reference test measures the difference).
"""

import functools
import math
import tempfile
from pathlib import Path

import torch

from minirl.rewards.images import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, clip_preprocess
from minirl.rewards.loading import RewardModel, read_json

FILES = ["config.json", ("model.safetensors", "pytorch_model.bin")]
MAX_TOKENS = 77  # CLIP's text context; longer prompts are truncated

# the hub repositories' architectures (open_clip's model_configs): text (width, layers, heads), vision (width,
# layers, heads, patch), the embedding size and the activation; MLPs are 4x the width, images 224 px
ARCHITECTURES = {
    "ViT-B/32": dict(text=(512, 12, 8), vision=(768, 12, 12, 32), projection_dim=512, act="quick_gelu"),
    "ViT-L/14": dict(text=(768, 12, 12), vision=(1024, 24, 16, 14), projection_dim=768, act="quick_gelu"),
    "ViT-H/14": dict(text=(1024, 24, 16), vision=(1280, 32, 16, 14), projection_dim=1024, act="gelu"),
}
TINY = dict(text=(32, 2, 4), vision=(32, 2, 4, 32), projection_dim=32, act="quick_gelu")  # every tiny twin's
TWIN_OF = "minirl_twin_of"  # a tiny twin's config.json key: the architecture it stands for


class CLIPEmbedder(RewardModel):
    """A CLIPModel with its tokenizer and image normalisation: unit-norm image and text embeddings in fp32.
    `crop_offset`: how the centre crop's offset is made whole (images.center_crop): floored as CLIPProcessor
    does, unless a reward's own recipe is torchvision's (it rounds)."""

    crop_offset = math.floor

    def __init__(self, clip, tokenizer, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD):
        super().__init__()
        self.clip, self.tokenizer, self.mean, self.std = clip, tokenizer, tuple(mean), tuple(std)
        self.size = clip.config.vision_config.image_size
        # read in fp32 before the model may be cast: in bf16, a trained CLIP's ln 100 becomes 4.594 (scale 98.9)
        self.scale = clip.logit_scale.detach().float().exp().item()

    def preprocess(self, images):
        """(B, 3, H, W) in [0, 1] -> the vision tower's input (B, 3, S, S) in fp32, by this reward's recipe."""
        return clip_preprocess(images, self.size, self.mean, self.std, self.crop_offset)

    def image_embeds(self, images):
        """(B, 3, H, W) in [0, 1] -> (B, D) unit vectors; preprocessing in fp32, the model in its dtype."""
        pixels = self.preprocess(images).to(self.dtype)  # (B, 3, S, S)
        return unit(projected(self.clip.get_image_features(pixel_values=pixels)).float())

    def text_embeds(self, texts):
        """A list of N strings -> (N, D) unit vectors (at most MAX_TOKENS tokens each, truncated)."""
        tokens = self.tokenizer(list(texts), padding=True, truncation=True, max_length=MAX_TOKENS,
                                return_tensors="pt").to(self.device)
        return unit(projected(self.clip.get_text_features(input_ids=tokens.input_ids,
                                                          attention_mask=tokens.attention_mask)).float())

    def logit_scale(self):
        """CLIP's logit_scale.exp(), in fp32 whatever the model's dtype."""
        return self.scale


def projected(features):
    """The projected embeddings of get_*_features: a tensor in transformers 4, pooler_output in 5."""
    return features if isinstance(features, torch.Tensor) else features.pooler_output


def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def check_prompts(prompts, batch_size, name):
    """Raise a clear error unless `prompts` is a list of `batch_size` strings."""
    if not (isinstance(prompts, (list, tuple)) and len(prompts) == batch_size
            and all(isinstance(p, str) for p in prompts)):
        raise ValueError(f"{name} takes one prompt string per image ({batch_size} images); got {prompts!r}")


def check_no_options(options, name):
    if options:
        raise ValueError(f"{name} takes no options; got {sorted(options)}")


def architecture(config):
    """Which of ARCHITECTURES a CLIPConfig describes: by its sizes, or for a tiny twin the one it stands for;
    None for a CLIP of another size."""
    t, v = config.text_config, config.vision_config
    sizes = dict(text=(t.hidden_size, t.num_hidden_layers, t.num_attention_heads),
                 vision=(v.hidden_size, v.num_hidden_layers, v.num_attention_heads, v.patch_size),
                 projection_dim=config.projection_dim)
    return getattr(config, TWIN_OF, None) or next(
        (name for name, a in ARCHITECTURES.items() if all(a[k] == sizes[k] for k in sizes)), None)


def describe(config):
    """A CLIPConfig in words: "ViT-B/32", "ViT-B/32 (a tiny random twin of one)", or its sizes."""
    held, v = architecture(config), config.vision_config
    if held is None:
        return f"of another size (vision width {v.hidden_size}, patch {v.patch_size}, embeddings " \
               f"{config.projection_dim})"
    return f"{held} (a tiny random twin of one)" if getattr(config, TWIN_OF, None) else held


def load_clip(folder, name, architectures=None):
    """(CLIPModel, tokenizer, mean, std) from a folder with a CLIP hub repository's files (fetched: config.json
    names a CLIP), for the reward `name`; with `architectures`, a CLIP of another (ARCHITECTURES' names, or a
    tiny twin of another) is refused before its weights are read."""
    from transformers import AutoTokenizer, CLIPConfig, CLIPModel
    folder = Path(folder)
    config = CLIPConfig.from_pretrained(folder)
    if architectures and architecture(config) not in architectures:
        raise ValueError(f"{name} folder {str(folder)!r} holds a CLIP {describe(config)}; {name} expects a CLIP "
                         f"{' or '.join(architectures)}")
    clip = CLIPModel.from_pretrained(folder, config=config)
    tokenizer = AutoTokenizer.from_pretrained(folder) if (folder / "tokenizer_config.json").is_file() \
        else offline_tokenizer()
    processor = folder / "preprocessor_config.json"
    settings = read_json(processor, name) if processor.is_file() else {}
    return clip, tokenizer, settings.get("image_mean", OPENAI_CLIP_MEAN), settings.get("image_std", OPENAI_CLIP_STD)


@functools.cache
def offline_tokenizer():
    """CLIP's BPE tokenizer, built once from open_clip's vocabulary (no download)."""
    from minirl.tokenizer import clip_tokenizer
    with tempfile.TemporaryDirectory() as tmp:
        return clip_tokenizer(tmp)


def clip_config(architecture, tiny=False):
    """The CLIPConfig of one of ARCHITECTURES (as in its hub repository's config.json) or, tiny=True, of its tiny
    twin: the TINY sizes, marked in config.json as a twin of `architecture`."""
    from transformers import CLIPConfig
    a = TINY if tiny else ARCHITECTURES[architecture]
    (text_width, text_layers, text_heads), (width, layers, heads, patch) = a["text"], a["vision"]
    text = dict(hidden_size=text_width, intermediate_size=4 * text_width, num_hidden_layers=text_layers,
                num_attention_heads=text_heads, max_position_embeddings=MAX_TOKENS, vocab_size=49408,
                hidden_act=a["act"])  # bos/eos: CLIP's 49406/49407 (the defaults)
    vision = dict(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers, num_attention_heads=heads,
                  patch_size=patch, image_size=224, hidden_act=a["act"])
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=a["projection_dim"],
                      **({TWIN_OF: architecture} if tiny else {}))


def random_clip(architecture, seed=0, tiny=False):
    """A CLIPModel of `architecture` (or its tiny twin) with random weights, whose image and text embeddings
    lean one way: each tower's final layer-norm bias is set so that its projection is a shared unit direction
    times the projection's Frobenius norm (the typical length of a projected feature). A trained CLIP's
    image-text cosines are positive too (about 0.1-0.35); with plain random weights half of them would be
    negative, where CLIPScore's max(cos, 0) has no gradient. The tiny twin's cosines are about 0.3-0.45."""
    from transformers import CLIPModel
    torch.manual_seed(seed)
    clip = CLIPModel(clip_config(architecture, tiny)).eval()
    direction = unit(torch.randn(clip.config.projection_dim))  # (D,)
    with torch.no_grad():
        for norm, projection in ((clip.vision_model.post_layernorm, clip.visual_projection),
                                 (clip.text_model.final_layer_norm, clip.text_projection)):
            w = projection.weight  # (D, width)
            norm.bias.copy_(torch.linalg.pinv(w) @ direction * w.norm())
    return clip


def save_clip(embedder, folder):
    """Write a CLIPEmbedder's model, image processor and tokenizer to `folder` in a CLIP hub repository's layout
    (config.json, model.safetensors, preprocessor_config.json, tokenizer files), so that
    `CLIPModel.from_pretrained(folder)` and `AutoProcessor.from_pretrained(folder)` read it. Returns the folder."""
    from transformers import CLIPImageProcessor
    folder = Path(folder)
    embedder.clip.save_pretrained(folder)
    size = embedder.size
    CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}, resample=3,
                       do_center_crop=True, image_mean=list(embedder.mean), image_std=list(embedder.std),
                       ).save_pretrained(folder)  # resample 3: PIL's bicubic
    embedder.tokenizer.save_pretrained(folder)
    return folder
