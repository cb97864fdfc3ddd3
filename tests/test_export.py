"""Using a trained model: `minirl sample` draws from a run's checkpoint with the run's sampler, and `minirl export`
writes its LoRA (or its whole UNet / transformer) in the layout stock diffusers loads, checked by loading the export
with diffusers alone and comparing the denoiser's output (or weights) with minirl's."""

import json

import numpy as np
import pytest
import torch
from diffusers import StableDiffusion3Pipeline, StableDiffusionPipeline, UNet2DConditionModel
from PIL import Image

from minirl import sd
from minirl.checkpoint import load_state
from minirl.cli import main
from minirl.export import load_trained

RUN = ["--prompts", "cat,dog", "--epochs", "1", "--samples-per-epoch", "4", "--sample-batch-size", "4",
       "--train-batch-size", "4", "--steps", "4", "--image-every", "0", "--lr", "1e-2"]


def train(pipeline, out, *extra):
    main(["train", "--pipeline", str(pipeline), *RUN, "--out", str(out), *extra])
    return out


@pytest.fixture(scope="module")
def lora_run(tiny_sd, tmp_path_factory):
    return train(tiny_sd, tmp_path_factory.mktemp("lora") / "run")


def denoiser_output(unet, sd3=False):
    """The denoiser's output on fixed random inputs (a latent, a timestep, text embeddings)."""
    generator = torch.Generator().manual_seed(0)
    shape = (1, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    x = torch.randn(shape, generator=generator)
    with torch.no_grad():
        if sd3:
            text = torch.randn(1, 8, unet.config.joint_attention_dim, generator=generator)
            pooled = torch.randn(1, unet.config.pooled_projection_dim, generator=generator)
            return unet(hidden_states=x, timestep=torch.tensor([500.0]), encoder_hidden_states=text,
                        pooled_projections=pooled).sample
        text = torch.randn(1, 77, unet.config.cross_attention_dim, generator=generator)
        return unet(x, torch.tensor([500]), encoder_hidden_states=text).sample


def test_load_trained_holds_the_checkpoints_weights_and_the_runs_sampler(lora_run):
    pipe, policy = load_trained(lora_run)
    trained = load_state(lora_run / "checkpoints")["trainable"]
    params = dict(pipe.unet.named_parameters())
    assert all(torch.equal(params[name], value) for name, value in trained.items())
    assert any("lora_B" in name and value.abs().max() > 0 for name, value in trained.items())  # it learned
    assert (policy.num_steps, policy.eta, policy.guidance_scale, policy.min_sigma) == (4, 1.0, 5.0, 0.05)


def test_exported_lora_loads_into_a_stock_pipeline_and_predicts_as_minirl(tiny_sd, lora_run, tmp_path):
    main(["export", "--run", str(lora_run), "--out", str(tmp_path / "lora")])
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd, safety_checker=None, requires_safety_checker=False)
    base = denoiser_output(pipe.unet)
    pipe.load_lora_weights(tmp_path / "lora")
    ours = denoiser_output(load_trained(lora_run)[0].unet)
    assert (ours - base).abs().max() > 1e-3                       # the LoRA moves the prediction
    torch.testing.assert_close(denoiser_output(pipe.unet), ours, atol=1e-5, rtol=1e-5)


def test_exported_full_unet_loads_with_from_pretrained(tiny_sd, tmp_path):
    run = train(tiny_sd, tmp_path / "full", "--lora-rank", "0")
    main(["export", "--run", str(run), "--out", str(tmp_path / "export")])
    unet = UNet2DConditionModel.from_pretrained(tmp_path / "export" / "unet")
    trained = load_state(run / "checkpoints")["trainable"]
    assert trained.keys() == unet.state_dict().keys()
    assert all(torch.equal(unet.state_dict()[name], value) for name, value in trained.items())


def test_exported_sd3_lora_loads_into_a_stock_sd3_pipeline(tmp_path):
    from minirl.sd import make_tiny_sd3
    folder = make_tiny_sd3(tmp_path / "sd3", sample_size=8)
    run = train(folder, tmp_path / "run", "--lora-rank", "2")
    main(["export", "--run", str(run), "--out", str(tmp_path / "lora")])
    pipe = StableDiffusion3Pipeline.from_pretrained(folder, text_encoder_3=None, tokenizer_3=None)
    base = denoiser_output(pipe.transformer, sd3=True)
    pipe.load_lora_weights(tmp_path / "lora")
    ours = denoiser_output(load_trained(run)[0].transformer, sd3=True)
    assert (ours - base).abs().max() > 1e-4
    torch.testing.assert_close(denoiser_output(pipe.transformer, sd3=True), ours, atol=1e-5, rtol=1e-5)


def test_sample_draws_from_the_checkpoint_with_the_recorded_seeds(tiny_sd, lora_run, tmp_path):
    out = tmp_path / "samples"
    main(["sample", "--run", str(lora_run), "--prompts", "cat,a dog", "--images-per-prompt", "2", "--out", str(out)])
    index = json.loads((out / "index.json").read_text())
    assert [(e["prompt"], e["file"]) for e in index] == [
        ("cat", "0000_00.png"), ("cat", "0000_01.png"), ("a dog", "0001_00.png"), ("a dog", "0001_01.png")]
    _, policy = load_trained(lora_run)
    entry = index[3]
    trajectory = policy.rollout([entry["prompt"]], [torch.Generator().manual_seed(entry["seed"])])
    expected = policy.decode(trajectory.latents[:, -1])[0].permute(1, 2, 0).numpy() * 255
    written = np.asarray(Image.open(out / entry["file"]), dtype=np.float64)
    assert np.abs(written - expected).max() <= 1.0                # the same image, to 8-bit rounding
    base = sd.policy_from_pipeline(sd.load_pipeline(tiny_sd), num_steps=4)
    untrained = base.decode(base.rollout([entry["prompt"]], [torch.Generator().manual_seed(entry["seed"])])
                            .latents[:, -1])[0].permute(1, 2, 0).numpy() * 255
    assert np.abs(written - untrained).max() > 2.0                # from the trained weights, not the base model's
