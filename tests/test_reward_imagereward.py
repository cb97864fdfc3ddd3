"""ImageReward against the official recipe, on the tiny twin's weights (BLIP's original key names).

There is no official package to run (image-reward pins old libraries and downloads at import), so the reference
is written here: ImageReward.py's `score` (torchvision transforms on PIL images, bert-base-uncased's tokenizer
with BLIP's special tokens, padding to 35, the [CLS] output, the MLP, (r - mean) / std), with BLIP's ViT and
BERT-with-cross-attention forward re-read from BLIP's vit.py and med.py as plain torch ops on the state dict.
"""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms
from transformers import BertTokenizer

from minirl.rewards import imagereward as ir

PROMPTS = ["a photo of a cat and a dog", "an astronaut riding a horse"]
# (H, W): non-square and square, both resized up to 224, and 200 x 203, whose crop offset 1.5 torchvision rounds
SIZES = [(64, 48), (96, 96), (200, 203)]
OFFICIAL_MEAN, OFFICIAL_STD = 0.16717362830052426, 1.0333394966054072  # ImageReward.py


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    return ir.make_tiny(tmp_path_factory.mktemp("imagereward"))


@pytest.fixture(scope="module")
def model(twin):
    return ir.load(twin, device=torch.device("cpu"), dtype=torch.float32)


def smooth_pixels(h, w, seed):
    """A low-frequency random pattern, quantised to uint8 (H, W, 3) so that both paths see the same pixels."""
    coarse = torch.rand(1, 3, 4, 3, generator=torch.Generator().manual_seed(seed))
    image = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0]
    return (image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


# ---- the official recipe, written from ImageReward.py, blip.py, vit.py and med.py ----

def official_tokenizer(folder):
    tokenizer = BertTokenizer.from_pretrained(str(folder / "tokenizer"))  # init_tokenizer
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tokenizer


OFFICIAL_TRANSFORM = transforms.Compose([  # ImageReward.py's _transform(224)
    transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC), transforms.CenterCrop(224),
    lambda image: image.convert("RGB"), transforms.ToTensor(),
    transforms.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))])


class Blip:
    """BLIP's forward on its own state dict (the keys of ImageReward.pt)."""

    def __init__(self, sd, med, vit_heads):
        self.sd, self.med, self.vit_heads = sd, med, vit_heads

    def linear(self, x, name):
        return F.linear(x, self.sd[name + ".weight"], self.sd[name + ".bias"])

    def layer_norm(self, x, name, eps):
        return F.layer_norm(x, x.shape[-1:], self.sd[name + ".weight"], self.sd[name + ".bias"], eps)

    def vit(self, image):  # vit.py VisionTransformer.forward
        p, H = "blip.visual_encoder.", self.vit_heads
        w = self.sd[p + "patch_embed.proj.weight"]
        x = F.conv2d(image, w, self.sd[p + "patch_embed.proj.bias"], stride=w.shape[-1]).flatten(2).transpose(1, 2)
        x = torch.cat([self.sd[p + "cls_token"].expand(len(x), -1, -1), x], 1)
        x = x + self.sd[p + "pos_embed"][:, :x.shape[1]]
        depth = len({k.split(".")[3] for k in self.sd if k.startswith(p + "blocks.")})
        for i in range(depth):
            b = f"{p}blocks.{i}."
            B, N, C = x.shape
            qkv = self.linear(self.layer_norm(x, b + "norm1", 1e-6), b + "attn.qkv")
            q, k, v = qkv.reshape(B, N, 3, H, C // H).permute(2, 0, 3, 1, 4)
            attn = (q @ k.transpose(-2, -1) * (C // H) ** -0.5).softmax(-1)
            x = x + self.linear((attn @ v).transpose(1, 2).reshape(B, N, C), b + "attn.proj")
            h = F.gelu(self.linear(self.layer_norm(x, b + "norm2", 1e-6), b + "mlp.fc1"))
            x = x + self.linear(h, b + "mlp.fc2")
        return self.layer_norm(x, p + "norm", 1e-6)

    def attention(self, x, context, mask, b):  # med.py BertAttention: BertSelfAttention + BertSelfOutput
        B, H, eps = len(x), self.med["num_attention_heads"], self.med["layer_norm_eps"]
        d = x.shape[-1] // H
        q, k, v = (self.linear(t, b + n).view(B, -1, H, d).transpose(1, 2)
                   for t, n in ((x, "self.query"), (context, "self.key"), (context, "self.value")))
        attn = (q @ k.transpose(-1, -2) / math.sqrt(d) + mask).softmax(-1)
        out = (attn @ v).transpose(1, 2).reshape(B, -1, H * d)
        return self.layer_norm(self.linear(out, b + "output.dense") + x, b + "output.LayerNorm", eps)

    def text(self, ids, mask, image_embeds):  # med.py BertModel.forward, mode="multimodal", not a decoder
        p, eps = "blip.text_encoder.", self.med["layer_norm_eps"]
        x = self.sd[p + "embeddings.word_embeddings.weight"][ids]
        x = self.layer_norm(x + self.sd[p + "embeddings.position_embeddings.weight"][:ids.shape[1]],
                            p + "embeddings.LayerNorm", eps)
        self_mask = (1.0 - mask[:, None, None, :].float()) * -10000.0  # get_extended_attention_mask
        image_mask = torch.zeros(1)  # image_atts all ones
        for i in range(self.med["num_hidden_layers"]):
            b = f"{p}encoder.layer.{i}."
            x = self.attention(x, x, self_mask, b + "attention.")
            x = self.attention(x, image_embeds, image_mask, b + "crossattention.")
            h = F.gelu(self.linear(x, b + "intermediate.dense"))  # ACT2FN["gelu"]: exact
            x = self.layer_norm(self.linear(h, b + "output.dense") + x, b + "output.LayerNorm", eps)
        return x

    def score(self, image, ids, mask):  # ImageReward.score, one image
        features = self.text(ids, mask, self.vit(image))[:, 0].float()
        r = features
        for i in (0, 2, 4, 6, 7):  # the MLP's Linear layers; Dropouts between
            r = self.linear(r, f"mlp.layers.{i}")
        return features, (r - OFFICIAL_MEAN) / OFFICIAL_STD


@pytest.fixture(scope="module")
def official(twin):
    sd = torch.load(twin / "ImageReward.pt", map_location="cpu", weights_only=True)
    med = json.loads((twin / "med_config.json").read_text())
    tokenizer = official_tokenizer(twin)

    def score(pixels, prompt):
        tokens = tokenizer(prompt, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
        image = OFFICIAL_TRANSFORM(Image.fromarray(pixels)).unsqueeze(0)
        return image, tokens, *Blip(sd, med, ir.TINY_VIT["num_attention_heads"]).score(
            image, tokens.input_ids, tokens.attention_mask)
    return score


# ---- tests ----

def test_the_twin_has_the_hub_layout_and_blip_key_names(twin, model):
    assert (twin / "ImageReward.pt").is_file() and (twin / "med_config.json").is_file()
    assert (twin / "tokenizer" / "vocab.txt").is_file()
    sd = torch.load(twin / "ImageReward.pt", map_location="cpu", weights_only=True)
    assert {k.split(".")[0] for k in sd} == {"blip", "mlp"}
    assert {k for k in sd if k.startswith("mlp.")} == {f"mlp.layers.{i}.{t}" for i in (0, 2, 4, 6, 7)
                                                      for t in ("weight", "bias")}
    assert "blip.visual_encoder.blocks.1.attn.qkv.weight" in sd and "blip.visual_encoder.norm.bias" in sd
    assert "blip.text_encoder.encoder.layer.1.crossattention.self.key.weight" in sd
    # every parameter of ours comes from the file; the file's other keys are exactly the documented unused ones
    ours = {ir.original_name(k) for k in model.state_dict()}
    assert ours | set(ir.UNUSED_KEYS) == set(sd) and not ours & set(ir.UNUSED_KEYS)
    for key, value in model.state_dict().items():
        assert torch.equal(value, sd[ir.original_name(key)]), key


def test_vit_sizes_are_read_from_the_weights(twin):
    sd = torch.load(twin / "ImageReward.pt", map_location="cpu", weights_only=True)
    assert ir.vit_from_weights(sd) == ir.TINY_VIT
    p = "blip.visual_encoder."
    vit_l = {p + "patch_embed.proj.weight": torch.empty(1024, 3, 16, 16, device="meta"),
             p + "pos_embed": torch.empty(1, 197, 1024, device="meta"),
             **{f"{p}blocks.{i}.mlp.fc1.weight": torch.empty(4096, 1024, device="meta") for i in range(24)}}
    assert ir.vit_from_weights(vit_l) == ir.VIT_LARGE


def test_prompts_tokenise_as_the_official_tokenizer(twin, model):
    tokenizer = official_tokenizer(twin)
    for prompt in PROMPTS + ["two cups", "a " * 40]:
        ids, mask = model.tokenize([prompt])
        official = tokenizer(prompt, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
        assert torch.equal(ids, official.input_ids) and torch.equal(mask, official.attention_mask)
        assert ids.shape == (1, 35) and ids[0, 0] == tokenizer.cls_token_id  # [CLS], not BLIP's [ENC]
    vocab = ir.TINY_MED["vocab_size"]
    assert len(model.tokenizer) == vocab
    assert model.tokenizer.bos_token_id == vocab - 2 and model.tokenizer.convert_tokens_to_ids("[ENC]") == vocab - 1


def test_architecture_matches_blips_forward(official, model):
    """Our transformers modules and BLIP's forward on the same pixels and tokens: features and score."""
    for seed, (h, w) in enumerate(SIZES):
        image, tokens, features, score = official(smooth_pixels(h, w, seed), PROMPTS[seed % 2])
        ours = model.text_features(image, tokens.input_ids, tokens.attention_mask)
        ours_score = (model.mlp.layers(ours).squeeze(-1) - ir.MEAN) / ir.STD
        torch.testing.assert_close(ours, features, atol=1e-4, rtol=1e-4)  # measured: 0 (the same fp32 ops)
        torch.testing.assert_close(ours_score, score[:, 0], atol=1e-5, rtol=1e-5)  # measured: 0


def test_reward_matches_the_official_recipe(official, model):
    """Our tensor path (torch bicubic resize) against the official PIL path on the same uint8 pixels."""
    ours, reference = [], []
    for seed, (h, w) in enumerate(SIZES):
        pixels = smooth_pixels(h, w, seed)
        images = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
        ours.append(model(images, [PROMPTS[seed % 2]], [{}])[0])
        reference.append(official(pixels, PROMPTS[seed % 2])[3][:, 0])
    ours, reference = torch.cat(ours), torch.cat(reference)
    assert (reference - reference.mean()).abs().max() > 0.05  # the twin's scores differ: the check has teeth
    torch.testing.assert_close(ours, reference, atol=5e-3, rtol=0)  # measured: 5.0e-4, 9.1e-4, 9.3e-5 by size


def test_errors_name_the_problem(twin, model, tmp_path, monkeypatch):
    import huggingface_hub

    def offline(repo_id, **kwargs):
        raise OSError(f"no connection to fetch {repo_id}")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    images = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match="one prompt .* per image: 2 images; got prompts=\\['a cat'\\]"):
        model(images, ["a cat"], [{}, {}])
    with pytest.raises(ValueError, match="one prompt"):
        model(images, "a cat", [{}, {}])
    with pytest.raises(ValueError, match="takes no options; got \\['max_length'\\]"):
        ir.load(twin, max_length=77)
    folder = ir.make_tiny(tmp_path / "no-tokenizer")
    for f in (folder / "tokenizer").iterdir():
        f.unlink()
    (folder / "tokenizer").rmdir()  # offline, the bert-base-uncased fallback cannot be fetched
    with pytest.raises(FileNotFoundError, match="google-bert/bert-base-uncased.*no-tokenizer/tokenizer"):
        ir.load(folder)
    (folder / "tokenizer").mkdir()
    with pytest.raises(FileNotFoundError, match="missing vocab.txt or tokenizer.json"):
        ir.load(folder)
    ir.write_tiny_tokenizer(folder / "tokenizer")
    sd = torch.load(folder / "ImageReward.pt", weights_only=True)
    del sd["mlp.layers.7.bias"]
    torch.save(sd, folder / "ImageReward.pt")
    with pytest.raises(ValueError, match="lacks 1 weights: \\['mlp.layers.7.bias'\\]"):
        ir.load(folder)
    (folder / "med_config.json").write_text(json.dumps({**ir.TINY_MED, "vocab_size": 30524}))
    with pytest.raises(ValueError, match=f"tokenizer has {ir.TINY_MED['vocab_size']} tokens .* vocab_size=30524"):
        ir.load(folder)
