"""What every learned reward promises, checked on its tiny twin: one protocol, batched, finite, differentiable
with respect to the images, fp32 and bf16, loaded from a folder or a hub id (without downloading). Each model's
agreement with its official recipe is in its own tests/test_reward_<module>.py."""

import re
import shutil

import pytest
import torch

from minirl import rewards
from minirl.rewards import MODELS, load, model_module, validate

PROMPTS = ["a photo of a cat and a dog", "two cups", "a cat left of a dog"]
OPTIONS = {"parity": {"soft": True}}  # hard labels (the paper's) have no gradient; soft shares do


@pytest.fixture(scope="module")
def twins(tiny_rewards):
    return tiny_rewards


def smooth_images(n=3, h=64, w=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 3, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)


def score(name, folder, images, dtype=None, **options):
    reward = load(name, folder, device="cpu", dtype=dtype, **{**OPTIONS.get(name, {}), **options})
    prompts = PROMPTS[:len(images)] if name != "parity" else [PROMPTS[0]] * len(images)
    return reward(images, prompts, [{} for _ in images])


@pytest.mark.parametrize("name", MODELS)
def test_scores_a_batch_as_the_protocol_says(twins, name):
    out = score(name, twins[name], smooth_images())
    values, info = validate(name, out, 3)
    assert out[0].dtype == torch.float32 and torch.isfinite(values).all()
    assert all(isinstance(v, float) for v in info.values()), info


@pytest.mark.parametrize("name", MODELS)
def test_gradient_reaches_the_images(twins, name):
    images = smooth_images().requires_grad_()
    rewards_, _ = score(name, twins[name], images)
    rewards_.sum().backward()
    assert torch.isfinite(images.grad).all()
    assert images.grad.abs().sum() > 0


@pytest.mark.parametrize("name", MODELS)
def test_bf16_agrees_with_fp32(twins, name):
    images = smooth_images()
    fp32, _ = score(name, twins[name], images)
    bf16, _ = score(name, twins[name], images, dtype="bf16")
    assert bf16.dtype == torch.float32
    torch.testing.assert_close(bf16, fp32, rtol=0.05, atol=0.05 * float(fp32.abs().max()) + 1e-3)


@pytest.mark.parametrize("name", [n for n in MODELS if n != "parity"])  # parity scores a group as a whole
def test_a_sample_scores_the_same_alone_and_in_a_batch(twins, name):
    images = smooth_images()
    batch, _ = score(name, twins[name], images)
    alone = torch.cat([score(name, twins[name], images[i:i + 1])[0] for i in range(3)])  # prompts[0] each
    assert batch[0] == pytest.approx(float(alone[0]), abs=1e-4)
    batch_same, _ = load(name, twins[name], device="cpu")(images, [PROMPTS[0]] * 3, [{}] * 3)
    torch.testing.assert_close(batch_same, alone, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_a_hub_id_fetches_the_model_repository(twins, name, monkeypatch):
    import huggingface_hub
    asked = []

    def snapshot_download(repo_id, allow_patterns=None, **kwargs):  # offline stand-in: the twin has the files
        asked.append(repo_id)
        return str(twins[name])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    load(name, device="cpu")
    assert model_module(name).HUB_ID in asked


@pytest.mark.parametrize("name", MODELS)
def test_a_folder_missing_a_file_names_it(twins, name, tmp_path):
    folder = tmp_path / name
    shutil.copytree(twins[name], folder)
    first = model_module(name).FILES[0]
    for alternative in first if isinstance(first, tuple) else (first,):
        (folder / alternative).unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError, match=re.escape(first[0] if isinstance(first, tuple) else first)):
        load(name, folder, device="cpu")


def test_bad_names_and_dtypes_are_named():
    with pytest.raises(ValueError, match="unknown reward 'imagerewards'; available: jpeg_compressibility"):
        load("imagerewards")
    with pytest.raises(ValueError, match="dtype must be one of .* got 'bf32'"):
        load("pickscore", "x", dtype="bf32")
    with pytest.raises(ValueError, match="float16 is not supported on CPU"):
        load("pickscore", "x", device="cpu", dtype=torch.float16)
    with pytest.raises(ValueError, match="has no weights and no options"):
        load("jpeg_compressibility", "some/folder")
    with pytest.raises(FileNotFoundError, match="'./nowhere' is neither a folder nor a hub id"):
        load("pickscore", "./nowhere", device="cpu")
    assert load("jpeg_compressibility") is rewards.jpeg_compressibility
