"""ImageReward v1.0 (Xu et al. 2023), the paper's human-preference reward: BLIP scores an (image, prompt) pair.

The image goes through BLIP's ViT-L/16 at 224 px; the prompt's tokens through BLIP's BERT text encoder, whose
every layer cross-attends to the image tokens; the [CLS] output feeds an MLP 768 -> 1024 -> 128 -> 64 -> 16 -> 1
without activations, and the reward is r normalised to about N(0, 1) on SD 1.4 samples:

    reward = (MLP(h_[CLS]) - 0.16717) / 1.03334

Follows zai-org/ImageReward (formerly THUDM)'s ImageReward/ImageReward.py (`score`, and `score_gard`, its
gradient path for ReFL) and models/BLIP (blip_pretrain.py, blip.py `init_tokenizer`, med.py, vit.py). Differs in:
transformers' BLIP classes instead of BLIP's own, filled from ImageReward.pt through an explicit key map;
preprocessing on tensors (differentiable, batched); one prompt per image; the tokenizer read from a local folder.

Position 0 is the tokenizer's own [CLS] (ImageReward does not swap in BLIP's [ENC] token); prompts are padded
to 35 tokens with an attention mask; the image tokens are all attended to.

The hub repository THUDM/ImageReward holds ImageReward.pt and med_config.json. The tokenizer is
bert-base-uncased's with BLIP's [DEC] and [ENC] tokens added (vocabulary 30524); offline, put its vocab.txt
and tokenizer_config.json in a `tokenizer/` folder beside the weights, once, on a machine with internet:

    huggingface_hub.snapshot_download("google-bert/bert-base-uncased", local_dir="FOLDER/tokenizer",
                                      allow_patterns=["vocab.txt", "tokenizer_config.json"])
"""

import json
import math
import re
import tempfile
from pathlib import Path

import torch
from torch import nn
from transformers import BertTokenizer, BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel

from minirl.rewards.images import check_images, clip_preprocess
from minirl.rewards.loading import RewardModel, fetch, load_weights, read_json

HUB_ID = "THUDM/ImageReward"
FILES = ("ImageReward.pt", "med_config.json")
TOKENIZER_ID = "google-bert/bert-base-uncased"  # the hub's id of BLIP's bert-base-uncased
TOKENIZER_FILES = (("vocab.txt", "tokenizer.json"), "tokenizer_config.json")
MEAN, STD = 0.16717362830052426, 1.0333394966054072  # r on SD 1.4 samples (ImageReward.py)
MAX_LENGTH = 35
VIT_HEAD_DIM = 64  # every BLIP ViT (base 768 / 12 heads, large 1024 / 16)
VIT_LARGE = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
             "image_size": 224, "patch_size": 16}  # BLIP_Pretrain(image_size=224, vit="large")
MED_CONFIG = {"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
              "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
              "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert",
              "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 0, "type_vocab_size": 2,
              "vocab_size": 30524, "encoder_width": 768, "add_cross_attention": True}  # the hub's med_config.json
# the twin's words (after [PAD] [UNK] [CLS] [SEP] [MASK]); anything else tokenises to [UNK]
TINY_WORDS = ("a an the of and on in with left right next to two three photo cat dog cup horse astronaut riding "
              "red blue green apple table doctor person , . ##s ##ing").split()
TINY_VIT = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2,
            "image_size": 224, "patch_size": 16}
TINY_MED = {**MED_CONFIG, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
            "num_hidden_layers": 2, "max_position_embeddings": 64, "vocab_size": 5 + len(TINY_WORDS) + 2}
# in ImageReward.pt but not on the scoring path: BLIP_Pretrain's contrastive projections, and med.py's
# position ids buffer (an arange, which transformers rebuilds)
UNUSED_KEYS = ("blip.vision_proj.weight", "blip.vision_proj.bias", "blip.text_proj.weight", "blip.text_proj.bias",
               "blip.text_encoder.embeddings.position_ids")
# transformers' BlipVisionModel names -> BLIP's VisionTransformer names (BLIP's BERT names are transformers')
VISION_NAMES = (("embeddings.patch_embedding", "patch_embed.proj"), ("embeddings.class_embedding", "cls_token"),
                ("embeddings.position_embedding", "pos_embed"), ("encoder.layers.", "blocks."),
                ("self_attn.projection", "attn.proj"), ("self_attn.qkv", "attn.qkv"), ("layer_norm1", "norm1"),
                ("layer_norm2", "norm2"), ("post_layernorm", "norm"))


class ImageReward(RewardModel):
    """BLIP's ViT + BERT with cross-attention + ImageReward's MLP, as transformers modules."""

    def __init__(self, vision_config, text_config, tokenizer):
        super().__init__()
        self.vision = BlipVisionModel(vision_config)
        self.text = BlipTextModel(text_config, add_pooling_layer=False)
        d = text_config.hidden_size
        # ImageReward's MLP: the same module indices (dropouts at 1, 3, 5) as in its state dict
        self.mlp = nn.Module()
        self.mlp.layers = nn.Sequential(nn.Linear(d, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                                        nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))
        self.tokenizer = tokenizer

    def tokenize(self, prompts):
        """(input_ids, attention_mask), each (B, 35): [CLS] prompt [SEP] [PAD]..., as ImageReward's `score`."""
        tokens = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=MAX_LENGTH,
                                return_tensors="pt")
        return tokens.input_ids.to(self.device), tokens.attention_mask.to(self.device)

    def text_features(self, pixel_values, input_ids, attention_mask):
        """The text encoder's output at [CLS], cross-attending to every image token: (B, 768)."""
        image_embeds = self.vision(pixel_values=pixel_values).last_hidden_state  # (B, 1 + patches, 1024)
        hidden = self.text(input_ids=input_ids, attention_mask=attention_mask,
                           encoder_hidden_states=image_embeds).last_hidden_state  # (B, 35, 768)
        return hidden[:, 0]

    def forward(self, images, prompts, metadata=None):
        check_images(images, "imagereward")
        if not (isinstance(prompts, (list, tuple)) and len(prompts) == len(images)
                and all(isinstance(p, str) for p in prompts)):
            raise ValueError(f"imagereward takes one prompt (a str) per image: {len(images)} images; got "
                             f"prompts={prompts!r}")
        pixels = clip_preprocess(images, self.vision.config.image_size).to(self.dtype)  # (B, 3, 224, 224)
        r = self.mlp.layers(self.text_features(pixels, *self.tokenize(prompts))).squeeze(-1)  # (B,)
        return (r.float() - MEAN) / STD, {}


def original_name(key):
    """The name in ImageReward.pt of our parameter `key`."""
    part, rest = key.split(".", 1)
    if part == "vision":
        for ours, theirs in VISION_NAMES:
            rest = rest.replace(ours, theirs)
        return "blip.visual_encoder." + rest
    return "blip.text_encoder." + rest if part == "text" else key


def vision_config(vit):
    """BLIP's ViT as a BlipVisionConfig: LayerNorm eps 1e-6 (BLIP's, not transformers' 1e-5), exact GELU."""
    return BlipVisionConfig(**vit, layer_norm_eps=1e-6, hidden_act="gelu")


def vit_from_weights(weights):
    """The ViT's sizes read from BLIP's weights (ImageReward hard-codes ViT-L/16 at 224 px; a twin is smaller)."""
    p = "blip.visual_encoder."
    needed = [p + "patch_embed.proj.weight", p + "pos_embed", p + "blocks.0.mlp.fc1.weight"]
    if any(k not in weights for k in needed):
        raise ValueError(f"ImageReward.pt lacks {[k for k in needed if k not in weights]}: not ImageReward's "
                         f"state dict (it has {sorted(weights)[:5]}...)")
    width, _, patch, _ = weights[p + "patch_embed.proj.weight"].shape
    grid = math.isqrt(weights[p + "pos_embed"].shape[1] - 1)
    depth = len({m.group(1) for k in weights if (m := re.match(re.escape(p) + r"blocks\.(\d+)\.", k))})
    return {"hidden_size": width, "intermediate_size": weights[p + "blocks.0.mlp.fc1.weight"].shape[0],
            "num_hidden_layers": depth, "num_attention_heads": width // VIT_HEAD_DIM, "image_size": grid * patch,
            "patch_size": patch}


def text_config(med, encoder_width):
    """BLIP's BERT ("med" config) as a BlipTextConfig. Its cross-attention reads the ViT's width (BLIP_Pretrain
    overrides med_config's encoder_width); is_decoder=True only builds the cross-attention layers: the forward
    runs bidirectional, as BLIP's text encoder does."""
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "max_position_embeddings", "hidden_act", "layer_norm_eps", "pad_token_id")
    return BlipTextConfig(**{k: med[k] for k in keys}, encoder_hidden_size=encoder_width, is_decoder=True,
                          hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, bos_token_id=None,
                          eos_token_id=None, sep_token_id=None)


def blip_tokenizer(folder):
    """bert-base-uncased's tokenizer from `folder` plus BLIP's [DEC] (bos) and [ENC] tokens (init_tokenizer)."""
    tokenizer = BertTokenizer.from_pretrained(str(folder))
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tokenizer


def find_tokenizer(folder):
    """`folder`/tokenizer if there is one, else bert-base-uncased's files from the hub."""
    if (Path(folder) / "tokenizer").is_dir():
        return fetch(Path(folder) / "tokenizer", TOKENIZER_FILES, "imagereward tokenizer")
    try:
        return fetch(TOKENIZER_ID, TOKENIZER_FILES, "imagereward tokenizer")
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}. ImageReward needs bert-base-uncased's tokenizer: put its vocab.txt and "
                                f"tokenizer_config.json in {str(Path(folder) / 'tokenizer')!r} (see "
                                f"minirl/rewards/imagereward.py)") from e


def load(path_or_id=HUB_ID, *, device="cpu", dtype=torch.float32, **options):
    """ImageReward from a folder or hub id (ImageReward.pt, med_config.json, optionally tokenizer/), frozen."""
    if options:
        raise ValueError(f"imagereward takes no options; got {sorted(options)}")
    folder = fetch(path_or_id, FILES, "imagereward")
    weights = load_weights(folder / "ImageReward.pt", "imagereward")
    med = read_json(folder / "med_config.json", "imagereward")
    tokenizer = blip_tokenizer(find_tokenizer(folder))
    if len(tokenizer) != med["vocab_size"]:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens with BLIP's [DEC] and [ENC]; med_config.json "
                         f"says vocab_size={med['vocab_size']} (bert-base-uncased's 30522 + 2)")
    vit = vision_config(vit_from_weights(weights))
    model = ImageReward(vit, text_config(med, vit.hidden_size), tokenizer)
    names = {key: original_name(key) for key in model.state_dict()}
    missing = [name for name in names.values() if name not in weights]
    if missing:
        raise ValueError(f"ImageReward.pt in {str(folder)!r} lacks {len(missing)} weights: {missing[:8]}")
    model.load_state_dict({key: weights[name] for key, name in names.items()})  # strict: every parameter set
    return model.freeze(device, dtype)


def write_tiny_tokenizer(folder):
    """A tiny WordPiece vocabulary (TINY_WORDS) in bert-base-uncased's file layout."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_WORDS]) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))
    return folder


def random_model(real_size=False, seed=0):
    """ImageReward with random weights: the real ViT-L + BERT-base sizes, or the twin's. Its tokenizer is the
    twin's tiny vocabulary either way (token ids are all the forward needs). Weights are variance-preserving
    (std 1/sqrt(fan_in)), biases and LayerNorms random too, so that every weight shapes the score."""
    vit, med = (VIT_LARGE, MED_CONFIG) if real_size else (TINY_VIT, TINY_MED)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = blip_tokenizer(write_tiny_tokenizer(tmp))
    model = ImageReward(vision_config(vit), text_config(med, vit["hidden_size"]), tokenizer)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                module.weight.normal_(0, module.weight[0].numel() ** -0.5, generator=g)  # std 1/sqrt(fan_in)
                module.bias.normal_(0, 0.1, generator=g)
            elif isinstance(module, nn.LayerNorm):
                module.weight.normal_(1, 0.1, generator=g)
                module.bias.normal_(0, 0.1, generator=g)
            elif isinstance(module, nn.Embedding):
                module.weight.normal_(0, 1, generator=g)
        model.vision.embeddings.class_embedding.normal_(0, 1, generator=g)
        model.vision.embeddings.position_embedding.normal_(0, 1, generator=g)
    return model.freeze(torch.device("cpu"), torch.float32)


def make_tiny(folder, seed=0):
    """A tiny random ImageReward in the hub repository's layout (ImageReward.pt with BLIP's original key names,
    unused keys included; med_config.json), plus a tiny tokenizer/ folder."""
    folder = Path(folder)
    write_tiny_tokenizer(folder / "tokenizer")
    model = random_model(False, seed)
    (folder / "med_config.json").write_text(json.dumps(TINY_MED, indent=2))  # its encoder_width is ignored, as ever
    state = {original_name(k): v for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    embed_dim = 16  # BLIP_Pretrain's contrastive width (256 in the real file)
    state.update({"blip.vision_proj.weight": torch.randn(embed_dim, TINY_VIT["hidden_size"], generator=g),
                  "blip.vision_proj.bias": torch.zeros(embed_dim),
                  "blip.text_proj.weight": torch.randn(embed_dim, TINY_MED["hidden_size"], generator=g),
                  "blip.text_proj.bias": torch.zeros(embed_dim),
                  "blip.text_encoder.embeddings.position_ids": torch.arange(TINY_MED["max_position_embeddings"])[None]})
    torch.save(state, folder / "ImageReward.pt")
    return folder
