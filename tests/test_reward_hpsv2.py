"""HPSv2 on its tiny twin against the official recipe (tgxs002/HPSv2's img_score.py and its open_clip fork's
transform.py, written out here): the same pixels, the same weights loaded as img_score.py loads them."""

import json
import shutil

import open_clip
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from minirl.rewards import hpsv2, load
from minirl.rewards.images import normalize

PROMPTS = ["a cat sitting on a red sofa", "two cups of coffee"]
SIZES = [(64, 48), (96, 96), (240, 320)]  # upsampled portrait, square, downsampled landscape: all padded but one
TOKENIZER = open_clip.get_tokenizer("ViT-H-14")  # img_score.py's: open_clip's BPE, 77 tokens


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    return hpsv2.make_tiny(tmp_path_factory.mktemp("hpsv2"))


@pytest.fixture(scope="module")
def reward(twin):
    return load("hpsv2", twin, device="cpu")


@pytest.fixture(scope="module")
def official_model(twin):
    """img_score.py's model: open_clip's architecture (here the twin's config), then the HPS state dict."""
    model = open_clip.create_model(f"local-dir:{twin}", output_dict=True)  # no base weights: none in the folder
    checkpoint = torch.load(twin / "HPS_v2.1_compressed.pt", map_location="cpu")
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def smooth_uint8(h, w, n=2, seed=0):
    """n smooth random images (a 5 x 4 pattern upsampled), as uint8 (n, 3, h, w): both paths see these pixels."""
    coarse = torch.rand(n, 3, 5, 4, generator=torch.Generator().manual_seed(seed))
    images = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def official_pixels(pil, size=224, tensor_first=True):
    """The fork's val transform before Normalize: convert RGB, ToTensor, ResizeMaxSize(size, fill=0) (longer
    side to size, bicubic, zero-pad centred; nothing at all when the longer side is already size).
    tensor_first=False resizes the PIL image before ToTensor, as upstream open_clip 2.x ordered it."""
    image = pil.convert("RGB")
    if tensor_first:
        image = TF.to_tensor(image)
    h, w = image.shape[1:] if tensor_first else image.size[::-1]
    scale = size / float(max(h, w))
    if scale != 1.0:
        new_h, new_w = round(h * scale), round(w * scale)
        image = TF.resize(image, [new_h, new_w], InterpolationMode.BICUBIC)
        pad_h, pad_w = size - new_h, size - new_w
        image = TF.pad(image, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=0)
    return image if tensor_first else TF.to_tensor(image)


def official_scores(model, pixels_uint8, prompts, tensor_first=True):
    """img_score.py's formula: diag(image_features @ text_features.T) of the normalised features."""
    pils = [Image.fromarray(p.permute(1, 2, 0).numpy()) for p in pixels_uint8]
    mean, std = open_clip.constants.OPENAI_DATASET_MEAN, open_clip.constants.OPENAI_DATASET_STD
    images = torch.stack([TF.normalize(official_pixels(p, tensor_first=tensor_first), mean, std) for p in pils])
    text = TOKENIZER(prompts)
    with torch.no_grad():
        out = model(images, text)
    return torch.diagonal(out["image_features"] @ out["text_features"].T)


# measured: the fork's order (ToTensor, then resize) max abs 8.6e-7, relative 1.5e-5 (scores 0.02-0.09);
# resizing the PIL image first (uint8 after the resize) max abs 1.0e-4, relative 1.2e-3
@pytest.mark.parametrize("size", SIZES)
def test_matches_the_official_recipe(reward, official_model, size):
    pixels = smooth_uint8(*size, seed=size[0])
    with torch.no_grad():
        got, info = reward(pixels.float() / 255, PROMPTS, [{}, {}])
    assert info == {"hpsv2": pytest.approx(float(got.mean()))}
    for tensor_first, atol in [(True, 1e-5), (False, 5e-4)]:
        expected = official_scores(official_model, pixels, PROMPTS, tensor_first)
        err = (got - expected).abs()
        print(f"hpsv2 {size} tensor_first={tensor_first}: max abs {err.max():.2e}, "
              f"relative {(err / expected.abs()).max():.2e}")
        torch.testing.assert_close(got, expected, atol=atol, rtol=0)


@pytest.mark.parametrize("size", SIZES)
def test_preprocessing_differs_from_the_fork_only_by_the_clamp(size):
    """Same geometry (rounding, pad offsets) and kernel as the fork's tensor path; minirl clamps the bicubic
    overshoot to [0, 1], the fork keeps it (up to about 0.005 on these images)."""
    pixels = smooth_uint8(*size, seed=size[0])
    official = torch.stack([official_pixels(Image.fromarray(p.permute(1, 2, 0).numpy())) for p in pixels])
    ours = hpsv2.preprocess(pixels.float() / 255, 224)
    torch.testing.assert_close(ours, normalize(official.clamp(0, 1)), atol=1e-5, rtol=0)
    assert (official - official.clamp(0, 1)).abs().max() < 0.01


def test_an_image_already_224_long_is_padded_where_the_fork_leaves_it():
    pixels = smooth_uint8(224, 160, n=1)
    official = official_pixels(Image.fromarray(pixels[0].permute(1, 2, 0).numpy()))
    assert official.shape == (3, 224, 160)  # the fork skips resize and pad at scale 1: the ViT cannot take it
    ours = hpsv2.preprocess(pixels.float() / 255, 224)
    assert ours.shape == (1, 3, 224, 224)
    torch.testing.assert_close(ours[0, :, :, 32:192], normalize(official[None])[0], atol=1e-6, rtol=0)


def test_version_picks_the_checkpoint(twin, reward):
    images = smooth_uint8(64, 48).float() / 255
    v21, _ = reward(images, PROMPTS, [{}, {}])
    v20, _ = load("hpsv2", twin, device="cpu", version="v2.0")(images, PROMPTS, [{}, {}])
    assert not torch.allclose(v21, v20)  # the twin's v2.0 file holds other weights
    with pytest.raises(ValueError, match=r"version must be one of \['v2.0', 'v2.1'\]; got 'v3'"):
        load("hpsv2", twin, device="cpu", version="v3")
    with pytest.raises(ValueError, match=r"only the option version .* got \['temperature'\]"):
        load("hpsv2", twin, device="cpu", temperature=2.0)


def test_a_missing_checkpoint_and_bad_prompts_are_named(twin, reward, tmp_path):
    folder = shutil.copytree(twin, tmp_path / "hpsv2")
    (folder / "HPS_v2_compressed.pt").unlink()
    with pytest.raises(FileNotFoundError, match="missing HPS_v2_compressed.pt"):
        load("hpsv2", folder, device="cpu", version="v2.0")
    with pytest.raises(ValueError, match="list of 2 prompt strings, one per image; got \\['a cat'\\]"):
        reward(torch.rand(2, 3, 32, 32), ["a cat"], [{}, {}])
    torch.save({"model": {}}, folder / "HPS_v2.1_compressed.pt")
    with pytest.raises(ValueError, match=r"must be a dict with key 'state_dict'.* got keys \['model'\]"):
        load("hpsv2", folder, device="cpu")


def test_without_a_config_the_architecture_is_open_clips_vit_h_14(twin, reward, tmp_path, monkeypatch):
    """The hub repository has only the .pt files: the loader asks open_clip for its built-in ViT-H-14 config
    (stood in for here by the tiny one: the real size is never built in tests)."""
    folder = tmp_path / "hub-layout"
    folder.mkdir()
    shutil.copy(twin / "HPS_v2.1_compressed.pt", folder)
    asked = []

    def get_model_config(name):
        asked.append(name)
        return json.loads((twin / "open_clip_config.json").read_text())["model_cfg"]

    monkeypatch.setattr(open_clip, "get_model_config", get_model_config)
    images = smooth_uint8(64, 48).float() / 255
    scores, _ = load("hpsv2", folder, device="cpu")(images, PROMPTS, [{}, {}])
    torch.testing.assert_close(scores, reward(images, PROMPTS, [{}, {}])[0])
    assert asked == ["ViT-H-14"]
