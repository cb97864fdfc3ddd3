"""Stable Diffusion 3 on a tiny random pipeline (CPU): `minirl make-tiny-sd --sd3` -> load_pipeline -> the policy
(checked against the pipeline's own sampler) -> `minirl train` with LoRA, CFG, group-relative advantages and the
KL term; the first PPO update on-policy, resume exact, bad input named before any sampling."""

import json
import shutil

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

from helpers import PROMPTS
from minirl import checkpoint, sd
from minirl.cli import main
from minirl.rewards import jpeg_compressibility
from minirl.runlog import read_metrics
from minirl.tasks import Task
from minirl.trainer import TrainConfig, Trainer

TRAIN = ["--reward", "jpeg_compressibility", "--prompts", "cat,dog", "--group-size", "2", "--advantages", "group",
         "--kl-weight", "0.04", "--steps", "3", "--guidance", "4.5", "--noise-level", "0.7", "--lora-rank", "4",
         "--samples-per-epoch", "4", "--sample-batch-size", "4", "--train-batch-size", "2", "--image-every", "0"]


@pytest.fixture(scope="module")
def tiny_sd3(tmp_path_factory):
    """A tiny random SD3 pipeline folder with 16x16 latents (16 px images), written by the command line."""
    folder = tmp_path_factory.mktemp("tiny-sd3") / "sd3"
    main(["make-tiny-sd", "--sd3", "--sample-size", "16", str(folder)])
    return folder


def lora_policy(folder, steps=3, guidance=4.5):
    """A policy on the tiny SD3 pipeline with LoRA whose up-projections are moved away from zero, so that the
    adapted model differs from the reference and a wrong log-prob or KL cannot hide."""
    pipe = sd.load_pipeline(folder)
    torch.manual_seed(0)
    sd.add_lora(pipe.transformer, 4)
    with torch.no_grad():
        for name, p in pipe.transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    return sd.policy_from_pipeline(pipe, num_steps=steps, guidance_scale=guidance)


def test_the_tiny_pipeline_is_sd3_and_the_policy_samples_as_the_pipeline(tiny_sd3):
    """The policy's prompt encoding, guidance and transformer call, stepped with the scheduler's own
    deterministic Euler step, give the latents StableDiffusion3Pipeline itself gives."""
    pipe = sd.load_pipeline(tiny_sd3)
    assert isinstance(pipe, StableDiffusion3Pipeline) and isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler)
    assert pipe.text_encoder_3 is None and pipe.scheduler.config.shift == 3.0 and sd.resolution(pipe) == 16
    policy = sd.policy_from_pipeline(pipe, num_steps=4, guidance_scale=4.5)
    assert policy.sd3 and policy.flow and policy.latent_shape == (4, 16, 16)
    prompts, x_T = ["a red cat", "a dog"], torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    x, embeds = x_T, policy.encode_prompts(prompts)
    with torch.no_grad():
        for t in policy.scheduler.timesteps:
            x = policy.scheduler.step(policy.predict_noise(x, t, embeds), t, x).prev_sample
        ref = pipe(prompts, latents=x_T, num_inference_steps=4, guidance_scale=4.5, output_type="latent",
                   max_sequence_length=128).images
    torch.testing.assert_close(x, ref, rtol=0, atol=1e-5)
    assert policy.decode(x).shape == (2, 3, 16, 16)


def test_the_flow_matching_loss_noises_as_rectified_flow(tiny_sd3):
    """L_pre for a flow model: x_sigma = (1 - sigma) x0 + sigma noise, target v = noise - x0, the transformer
    called at timestep sigma * 1000; by default sigma is SD3's shifted logit-normal, inside (0, 1)."""
    policy = sd.policy_from_pipeline(sd.load_pipeline(tiny_sd3), num_steps=3, guidance_scale=1.0)
    seen, denoise = [], policy.denoise
    policy.denoise = lambda x, t, e: seen.append((x, t)) or denoise(x, t, e)
    x0, embeds = torch.randn(2, 4, 16, 16), policy.encode_prompts(["cat", "dog"])
    pred, target = policy.denoising_prediction(x0, embeds, torch.Generator().manual_seed(0),
                                               timesteps=torch.tensor([250.0, 750.0]))
    noise = target + x0
    x_t, t = seen[-1]
    sigma = torch.tensor([0.25, 0.75]).view(2, 1, 1, 1)
    torch.testing.assert_close(x_t, (1 - sigma) * x0 + sigma * noise)
    assert t.tolist() == [250.0, 750.0] and pred.shape == target.shape
    policy.denoising_prediction(x0, embeds, torch.Generator().manual_seed(1))
    assert all(0 < v < 1000 for v in seen[-1][1].tolist())


def test_first_update_is_on_policy_with_cfg_lora_group_advantages_kl_and_l_pre(tiny_sd3, tmp_path):
    policy = lora_policy(tiny_sd3)
    x, embeds, t = torch.randn(2, 4, 16, 16), policy.encode_prompts(["cat", "dog"]), policy.scheduler.timesteps[1]
    with torch.no_grad():
        adapted = policy.denoise(x, t.expand(2), embeds)
        policy.unet.disable_adapters()
        reference = policy.denoise(x, t.expand(2), embeds)
        policy.unet.enable_adapters()
    assert (adapted - reference).abs().max() > 1e-2  # the perturbed LoRA changes the model
    config = TrainConfig(epochs=1, samples_per_epoch=4, sample_batch_size=4, train_batch_size=2, image_every=0,
                         advantages="group", kl_weight=0.04, pretrain_beta=1.0, out=str(tmp_path))
    data = lambda g: (torch.rand(2, 3, 16, 16, generator=g), ["cat", "dog"])  # noqa: E731
    trainer = Trainer(policy, [Task("jpeg", PROMPTS, jpeg_compressibility, group_size=2)], config, pretrain_data=data)
    assert policy.do_cfg and policy.trainable_steps.tolist() == [0, 1]  # the last step (std 0.006) is left out
    trainer.train()
    (m,) = read_metrics(tmp_path)
    assert m["max_abs_log_ratio_first_update"] < 1e-5  # ratio 1 to within 1e-5
    assert m["kl"] > 0 and m["pretrain_loss"] > 0 and m["grad_norm"] > 0


def test_minirl_train_on_sd3_resumes_exactly(tiny_sd3, tmp_path):
    """Two epochs straight; then the same run as if killed during epoch 2 (its checkpoint gone), resumed."""
    run = ["train", "--pipeline", str(tiny_sd3), *TRAIN, "--epochs", "2", "--out", str(tmp_path)]
    main(run)
    root = tmp_path / "checkpoints"
    straight = read_metrics(tmp_path), checkpoint.load_state(root / "epoch_0002")["trainable"]
    shutil.rmtree(root / "epoch_0002")
    (root / checkpoint.LATEST).write_text("epoch_0001")
    main([*run, "--resume"])
    resumed = read_metrics(tmp_path), checkpoint.load_state(root / "epoch_0002")["trainable"]
    drop = lambda ms: [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in ms]  # noqa: E731
    assert drop(straight[0]) == drop(resumed[0]) and len(straight[0]) == 2
    assert all(k in straight[0][0] for k in ("kl", "approx_kl", "clipfrac", "reward_mean"))
    assert straight[1].keys() == resumed[1].keys() and any("lora" in n for n in straight[1])
    assert all(torch.equal(straight[1][n], resumed[1][n]) for n in straight[1])
    config = json.loads((tmp_path / "config.json").read_text())["run"]
    assert config["scheduler"] == "flow" and config["noise_level"] == 0.7


def test_a_resolution_of_its_own_samples_as_the_pipeline_does_at_that_size(tiny_sd3, tmp_path):
    """SD 3.5 medium's config says 1024 px and Flow-GRPO trains it at 512: --resolution sets the latent's size, as
    the pipeline's height and width do, and the run records it for `minirl sample` and `minirl export`."""
    pipe = sd.load_pipeline(tiny_sd3)
    policy = sd.policy_from_pipeline(pipe, resolution=8, num_steps=2, guidance_scale=4.5)
    assert policy.latent_shape == (4, 8, 8)
    x_T, prompts = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)), ["a cat"]
    x, embeds = x_T, policy.encode_prompts(prompts)
    with torch.no_grad():
        for t in policy.scheduler.timesteps:
            x = policy.scheduler.step(policy.predict_noise(x, t, embeds), t, x).prev_sample
        ref = pipe(prompts, latents=x_T, height=8, width=8, num_inference_steps=2, guidance_scale=4.5,
                   output_type="latent", max_sequence_length=128).images
    torch.testing.assert_close(x, ref, rtol=0, atol=1e-5)
    main(["train", "--pipeline", str(tiny_sd3), *TRAIN, "--epochs", "1", "--resolution", "8", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "config.json").read_text())["run"]["policy"]["latent_size"] == 8
    largest = pipe.transformer.config.pos_embed_max_size  # beyond it the transformer fails mid-run: refused first
    with pytest.raises(ValueError, match=f"the transformer embeds positions for at most {largest}"):
        sd.policy_from_pipeline(pipe, resolution=largest + 1)


@pytest.mark.parametrize("extra, match", [
    (["--noise-level", "0"], r"--noise-level must be a finite number > 0; got 0.0"),
    (["--noise-level", "nan"], r"--noise-level must be a finite number > 0; got nan"),
    (["--scheduler", "ddim"], r"--scheduler ddim does not fit a StableDiffusion3Pipeline; valid: flow"),
])
def test_bad_input_is_named_before_sampling(tiny_sd3, tmp_path, capsys, extra, match):
    with pytest.raises(SystemExit, match=match):
        main(["train", "--pipeline", str(tiny_sd3), *TRAIN, "--epochs", "1", "--out", str(tmp_path), *extra])
    assert "estimated epoch time" not in capsys.readouterr().out
    assert not (tmp_path / "metrics.jsonl").exists()


def test_an_sd3_folder_missing_a_part_is_named_before_loading(tiny_sd3, tmp_path):
    broken = tmp_path / "sd3"
    shutil.copytree(tiny_sd3, broken)
    shutil.rmtree(broken / "text_encoder_2")
    index = json.loads((broken / "model_index.json").read_text())
    (broken / "model_index.json").write_text(json.dumps({**index, "text_encoder_3": ["transformers", "T5EncoderModel"]}))
    with pytest.raises(SystemExit, match=r"is missing \['text_encoder_2', 'text_encoder_3'\]; .* an SD3 one"):
        main(["train", "--pipeline", str(broken), *TRAIN, "--epochs", "1", "--out", str(tmp_path / "run")])
