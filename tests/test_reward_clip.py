"""The CLIP-based rewards (PickScore, CLIPScore, LAION aesthetic, the parity zero-shot classifier) on their tiny
twins against each official recipe, written out here: the same uint8 pixels as PIL images through the
official processor or transforms, the same weights through CLIPModel.from_pretrained, the official formula."""

import math
import shutil

import open_clip
import pytest
import torch
from PIL import Image
from torchvision import transforms
from transformers import AutoProcessor, CLIPModel

from minirl.rewards import ParityReward, aesthetic, clipscore, load, parity, pickscore, validate

MODULES = {"pickscore": pickscore, "clipscore": clipscore, "aesthetic": aesthetic, "parity": parity}
PROMPTS = ["a cat sitting on a red sofa", "two cups of coffee on a wooden table, " * 12]  # the second > 77 tokens
# upsampled portrait, square, downsampled landscape (model: 224), and an odd crop offset: 200 x 203 resizes to
# 224 x 227, whose offset (227 - 224) / 2 = 1.5 CLIPProcessor floors to 1 and torchvision's CenterCrop rounds to 2
SIZES = [(64, 48), (96, 96), (240, 320), (200, 203)]
BACKENDS = ["pil", "torchvision"]  # transformers 5's CLIPImageProcessor backends (4.x's processor was PIL's)


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip_rewards")
    return {name: module.make_tiny(root / name) for name, module in MODULES.items()}


@pytest.fixture(scope="module")
def official(twins):
    """Each twin read by the official loading code: CLIPModel.from_pretrained, AutoProcessor for each backend."""
    return {name: (CLIPModel.from_pretrained(folder).eval(),
                   {backend: AutoProcessor.from_pretrained(folder, backend=backend) for backend in BACKENDS})
            for name, folder in twins.items()}


@pytest.fixture(scope="module")
def rewards(twins):
    return {name: load(name, folder, device="cpu") for name, folder in twins.items()}


def smooth_uint8(h, w, n=2, seed=0):
    """n smooth random images (a 5 x 4 pattern upsampled), as uint8 (n, 3, h, w): both paths see these pixels."""
    coarse = torch.rand(n, 3, 5, 4, generator=torch.Generator().manual_seed(seed))
    images = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def to_pil(pixels):
    return [Image.fromarray(p.permute(1, 2, 0).numpy()) for p in pixels]


def unit(x):
    return x / torch.norm(x, dim=-1, keepdim=True)


def official_embeds(model, processor, pil_images, texts):
    """The model cards' recipe: the processor on PIL images, get_image_features / get_text_features
    (transformers 5 returns the projected embeddings as pooler_output), normalised."""
    image_inputs = processor(images=pil_images, return_tensors="pt")
    text_inputs = processor(text=texts, padding=True, truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        image = model.get_image_features(**image_inputs).pooler_output
        text = model.get_text_features(**text_inputs).pooler_output
    return unit(image), unit(text)


def scores(reward, pixels, prompts):
    with torch.no_grad():
        return reward(pixels.float() / 255, prompts, [{} for _ in pixels])


def assert_close_and_report(got, expected, atol):
    err = (got - expected).abs().max().item()
    print(f"max abs {err:.2e}, relative {err / expected.abs().max().item():.2e}")
    torch.testing.assert_close(got, expected, rtol=0, atol=atol)


# measured (scores 5.3-7.1): max abs 2.0e-3 at 64x48 (either backend), 6.9e-4 at 96x96, 3.1e-4 at 240x320,
# 1.1e-3 at 200x203 (7.6e-3 with the crop offset rounded); relative to the score <= 2.9e-4. The gap is the
# official paths' 8-bit rounding after the resize
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size", SIZES)
def test_pickscore_matches_the_model_card(official, rewards, size, backend):
    pixels = smooth_uint8(*size, seed=size[0])
    model, processors = official["pickscore"]
    image, text = official_embeds(model, processors[backend], to_pil(pixels), PROMPTS)
    with torch.no_grad():
        expected = model.logit_scale.exp() * (text @ image.T).diagonal()  # one prompt per image
    got, info = scores(rewards["pickscore"], pixels, PROMPTS)
    assert_close_and_report(got, expected, atol=4e-3)
    assert info["pickscore"] == pytest.approx(got.mean().item())


def test_pickscore_in_bf16_keeps_its_logit_scale_in_fp32(pickscore_100):
    """A trained CLIP's logit_scale sits at its cap, ln 100, which bf16 rounds to 4.594 (scale 98.9): PickScore
    would score 1.1% low. Measured on 16 images, bf16 against fp32: with the scale in fp32, +0.20% on average
    and at most 0.51%; with it in bf16, -0.80% on average and at most 1.09%."""
    pixels = torch.cat([smooth_uint8(96, 96, n=8, seed=5), smooth_uint8(96, 96, n=8, seed=6)])
    prompts = [PROMPTS[0], "two cups", "a dog", "a photo of a horse"] * 4
    fp32 = load("pickscore", pickscore_100, device="cpu")
    bf16 = load("pickscore", pickscore_100, device="cpu", dtype="bf16")
    assert fp32.logit_scale() == bf16.logit_scale() == pytest.approx(100.0, rel=1e-6)
    relative = scores(bf16, pixels, prompts)[0] / scores(fp32, pixels, prompts)[0] - 1
    assert relative.mean().abs() < 5e-3 and relative.abs().max() < 1e-2, relative


@pytest.fixture(scope="module")
def pickscore_100(twins, tmp_path_factory):
    """The PickScore twin with the logit_scale of the real checkpoint (ln 100)."""
    folder = tmp_path_factory.mktemp("pickscore_100")
    shutil.copytree(twins["pickscore"], folder, dirs_exist_ok=True)
    model = CLIPModel.from_pretrained(folder)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(100))
    model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("name", MODULES)
def test_the_centre_crop_follows_each_rewards_recipe(official, rewards, name):
    """At 200 x 203 the crop's offset is 1.5: CLIPProcessor floors it (PickScore, the zero-shot classifier),
    OpenAI CLIP's own preprocessing rounds it (CLIPScore, LAION's aesthetic predictor). Measured mean abs
    difference from the recipe's input: 0.0039 at the recipe's offset, 0.0176 a pixel off."""
    pixels = smooth_uint8(200, 203, seed=1)
    if name in ("pickscore", "parity"):
        expected = official[name][1]["pil"](images=to_pil(pixels), return_tensors="pt").pixel_values
    else:
        expected = torch.stack([openai_clip_pixels(p) for p in to_pil(pixels)])
    embedder = rewards[name].classify if name == "parity" else rewards[name]
    assert (embedder.preprocess(pixels.float() / 255) - expected).abs().mean() < 0.008


def openai_clip_pixels(pil):
    """OpenAI CLIP's own preprocessing (`clip.load`'s transform), which jmhessel/clipscore's CLIPImageDataset and
    LAION's simple_inference.py use: Resize(224, bicubic), CenterCrop (offset rounded), RGB, ToTensor, OpenAI
    mean/std."""
    return transforms.Compose([
        transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC), transforms.CenterCrop(224),
        lambda image: image.convert("RGB"), transforms.ToTensor(),
        transforms.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))])(pil)


def openai_clip_image_embeds(model, pixels):
    """Unit image embeddings of uint8 pixels through OpenAI CLIP's preprocessing."""
    with torch.no_grad():
        return unit(model.get_image_features(torch.stack([openai_clip_pixels(p) for p in to_pil(pixels)]))
                    .pooler_output)


# measured (scores 0.82-1.12): max abs 5.0e-4, 1.8e-4, 3.2e-5, 2.6e-4 by size; relative <= 4.5e-4
@pytest.mark.parametrize("size", SIZES)
def test_clipscore_matches_hessel_et_al(official, rewards, size):
    """get_clip_score: w * clip(sum(normalised image * normalised caption), 0) with w = 2.5, captions prefixed
    "A photo depicts " and tokenised by clip.tokenize(truncate=True) (open_clip's tokenize is the same)."""
    pixels = smooth_uint8(*size, seed=size[0])
    model = official["clipscore"][0]
    tokens = open_clip.tokenize(["A photo depicts " + p for p in PROMPTS])  # (2, 77), zero-padded
    with torch.no_grad():
        text = unit(model.get_text_features(tokens).pooler_output)
    expected = 2.5 * (openai_clip_image_embeds(model, pixels) * text).sum(-1).clamp(min=0)
    got, info = scores(rewards["clipscore"], pixels, PROMPTS)
    assert (expected > 0).all()  # the twin's cosines are positive: the reward has a gradient
    assert_close_and_report(got, expected, atol=1e-3)


# measured (scores 4.3-6.6, std 0.8 across these images): max abs 1.1e-3, 4.5e-3, 1.8e-3, 2.3e-3 by size (2.1e-2
# at 200x203 with the crop offset floored); relative <= 7.2e-4
@pytest.mark.parametrize("size", SIZES)
def test_aesthetic_matches_the_laion_predictor(twins, official, rewards, size):
    """christophschuhmann/improved-aesthetic-predictor's simple_inference.py: OpenAI CLIP's preprocessing, the
    image features / their L2 norm, the MLP loaded from the .pth with load_state_dict. (kvablack/ddpo-pytorch's
    aesthetic_scorer.py runs CLIPProcessor instead, whose crop offset is floored: the same at even offsets.)"""
    pixels = smooth_uint8(*size, seed=size[0])
    image = openai_clip_image_embeds(official["aesthetic"][0], pixels)
    mlp = torch.nn.Module()
    mlp.layers = torch.nn.Sequential(
        torch.nn.Linear(image.shape[1], 1024), torch.nn.Dropout(0.2), torch.nn.Linear(1024, 128),
        torch.nn.Dropout(0.2), torch.nn.Linear(128, 64), torch.nn.Dropout(0.1), torch.nn.Linear(64, 16),
        torch.nn.Linear(16, 1))
    mlp.load_state_dict(torch.load(twins["aesthetic"] / aesthetic.HEAD, weights_only=True))
    with torch.no_grad():
        expected = mlp.eval().layers(image).squeeze(1)
    got, info = scores(rewards["aesthetic"], pixels, PROMPTS)
    assert_close_and_report(got, expected, atol=1e-2)
    assert info["aesthetic"] == pytest.approx(got.mean().item())


def test_the_aesthetic_twin_tells_images_apart(rewards):
    """A head that gives every image nearly one score would pass any agreement test: the twin's scores spread."""
    pixels = smooth_uint8(96, 96, n=16, seed=3)
    got, _ = scores(rewards["aesthetic"], pixels, [""] * 16)
    assert got.std() > 0.3, got


# measured (class probabilities 0.21-0.30, std 0.03): max abs 1.5e-4, 1.2e-4, 7.4e-5, 8.8e-5 by size; relative
# <= 5e-4
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size", SIZES)
def test_parity_classifier_matches_clip_zero_shot(official, rewards, size, backend):
    """transformers' zero-shot recipe: CLIPProcessor(text=classes, images=...), CLIPModel(...).logits_per_image
    .softmax(-1); the reward is -SP of the hard labels, or of the mean probabilities with soft=True."""
    pixels = smooth_uint8(*size, n=4, seed=size[0])
    texts = list(parity.CLASS_SETS["skin_tone"])
    model, processors = official["parity"]
    inputs = processors[backend](text=texts, images=to_pil(pixels), return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = model(**inputs).logits_per_image.softmax(-1)  # (4, 4)
    reward = rewards["parity"]
    with torch.no_grad():
        got = reward.classify(pixels.float() / 255)
    assert_close_and_report(got, expected, atol=3e-4)
    prompts = ["a photo of a doctor"] * 4
    r, info = validate("parity", scores(reward, pixels, prompts), 4)
    assert torch.equal(r, torch.full((4,), -parity.statistical_parity(expected.argmax(-1), 4).item()))
    soft, _ = scores(ParityReward(reward.classify, 4, soft=True), pixels, prompts)
    torch.testing.assert_close(soft, -((expected.mean(0) - 0.25) ** 2).sum().expand(4), rtol=0, atol=1e-5)


def test_parity_statistical_parity_and_shares_by_hand():
    """4 samples, 2 classes. Hard labels (argmax): 3 of class 0 -> shares (.75, .25), SP = 2 * .25^2 = .125.
    Soft: mean probabilities (.6, .4) -> SP = 2 * .1^2 = .02, with the gradient of -SP: d/dp_i0 = -2 * .1 / 4."""
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.7, 0.3], [0.2, 0.8]], requires_grad=True)
    names = ["a photo of a man", "a photo of a woman"]
    r, info = ParityReward(lambda p: p, 2, names=names)(probs, ["a doctor"] * 4, [{}] * 4)
    torch.testing.assert_close(r, torch.full((4,), -0.125))
    assert info == pytest.approx({"statistical_parity": 0.125, "share/a photo of a man": 0.75,
                                  "share/a photo of a woman": 0.25})
    r, info = ParityReward(lambda p: p, 2, soft=True, names=names)(probs, ["a doctor"] * 4, [{}] * 4)
    torch.testing.assert_close(r, torch.full((4,), -0.02))
    assert info == pytest.approx({"statistical_parity": 0.02, "share/a photo of a man": 0.6,
                                  "share/a photo of a woman": 0.4})
    r[0].backward()
    torch.testing.assert_close(probs.grad, torch.tensor([[-0.05, 0.05]]).expand(4, 2))
    with pytest.raises(ValueError, match="soft=True needs class probabilities"):
        ParityReward(lambda p: p, 2, soft=True)(torch.tensor([0, 1]), ["a"] * 2, [{}] * 2)


def test_parity_class_sets_and_their_errors(twins):
    reward = load("parity", twins["parity"], device="cpu", classes="perceived_gender", credit="leave_one_out")
    r, info = validate("parity", reward(smooth_uint8(64, 48, n=3).float() / 255, ["a nurse"] * 3, [{}] * 3), 3)
    assert sorted(info) == ["share/a photo of a man", "share/a photo of a woman", "statistical_parity"]
    own = load("parity", twins["parity"], device="cpu", classes=["a red car", "a blue car", "a green car"], soft=True)
    assert own.soft and own.classify(torch.rand(2, 3, 32, 32)).shape == (2, 3)
    with pytest.raises(ValueError, match=r"classes must hold at least 2 distinct texts; got \['a doctor'\]"):
        load("parity", twins["parity"], device="cpu", classes=["a doctor"])
    with pytest.raises(ValueError, match="unknown class set 'age'; available: 'skin_tone', 'perceived_gender'"):
        load("parity", twins["parity"], device="cpu", classes="age")
    with pytest.raises(ValueError, match="soft must be True .* got 'yes'"):
        load("parity", twins["parity"], device="cpu", soft="yes")


def test_a_folder_without_tokenizer_or_processor_files_scores_the_same(twins, rewards, tmp_path):
    """A hub repository fetched for config.json and the weights only: the offline CLIP tokenizer and OpenAI's
    mean/std stand in for the folder's own files, with the same result."""
    for name in ("config.json", "model.safetensors"):
        shutil.copy(twins["pickscore"] / name, tmp_path / name)
    pixels = smooth_uint8(64, 48)
    torch.testing.assert_close(scores(load("pickscore", tmp_path, device="cpu"), pixels, PROMPTS)[0],
                               scores(rewards["pickscore"], pixels, PROMPTS)[0])


def test_errors_name_the_bad_value(twins, rewards, tmp_path):
    shutil.copytree(twins["aesthetic"], tmp_path / "aesthetic")
    (tmp_path / "aesthetic" / aesthetic.HEAD).unlink()
    with pytest.raises(FileNotFoundError, match=r"missing sac\+logos\+ava1-l14-linearMSE.pth"):
        load("aesthetic", tmp_path / "aesthetic", device="cpu")
    (tmp_path / "clipscore").mkdir()
    shutil.copy(twins["clipscore"] / "config.json", tmp_path / "clipscore")
    with pytest.raises(FileNotFoundError, match="missing model.safetensors or pytorch_model.bin"):
        load("clipscore", tmp_path / "clipscore", device="cpu")
    with pytest.raises(ValueError, match=r"pickscore takes no options; got \['classes'\]"):
        load("pickscore", twins["pickscore"], device="cpu", classes="skin_tone")
    with pytest.raises(ValueError, match=r"one prompt string per image \(2 images\); got \['a cat'\]"):
        rewards["clipscore"](torch.rand(2, 3, 32, 32), ["a cat"], [{}])


def test_aesthetic_hub_id_fetches_the_clip_and_the_head_repositories(twins, monkeypatch):
    import huggingface_hub
    asked = []

    def snapshot_download(repo_id, allow_patterns=None, **kwargs):  # offline stand-in: the twin has the files
        asked.append((repo_id, sorted(allow_patterns)))
        return str(twins["aesthetic"])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    load("aesthetic", device="cpu")
    assert asked == [("openai/clip-vit-large-patch14", ["config.json"]),       # one file a call, and of the
                     ("openai/clip-vit-large-patch14", ["model.safetensors"]),  # weights the first there is
                     ("camenduru/improved-aesthetic-predictor", [aesthetic.HEAD])]
