"""A run started from Python, as the README shows it: a policy built from a pipeline with minirl.sd's calls, a task,
a Trainer. Its config.json records the policy's settings read from the policy itself (denoiser, LoRA, scheduler,
latent size, steps, eta or noise level, guidance, min_sigma), it ends with reward_curves.png, and `minirl sample` can use it;
the summary names each sampler's own noise setting and the precision it trains in."""

import json

import pytest
import torch

from minirl.cli import main


def test_the_readme_snippet_trains_and_records_its_policy(tiny_sd, tmp_path):
    pipeline, out = str(tiny_sd), str(tmp_path / "run")
    # the README's snippet, with its placeholders filled in ------------------------------------------------------
    from minirl import sd
    from minirl.rewards import load
    from minirl.tasks import Task
    from minirl.trainer import TrainConfig, Trainer

    pipe = sd.load_pipeline(pipeline)                   # a folder or hub id; dtype=torch.bfloat16, device="cuda"
    sd.add_lora(sd.denoiser(pipe), rank=4)              # or sd.denoiser(pipe).requires_grad_(True): the whole UNet
    policy = sd.policy_from_pipeline(pipe, num_steps=10, eta=1.0, guidance_scale=5.0)
    task = Task("jpeg", ["a cat", "a dog"], load("jpeg_compressibility"))
    config = TrainConfig(epochs=2, samples_per_epoch=4, sample_batch_size=4, train_batch_size=2, out=out)
    Trainer(policy, [task], config).train()             # writes the run folder, as `minirl train` does
    # -------------------------------------------------------------------------------------------------------------
    record = json.loads((tmp_path / "run" / "config.json").read_text())["run"]["policy"]
    assert record == {"denoiser": "UNet2DConditionModel", "loaded_from": str((tiny_sd / "unet").resolve()),
                      "lora": {"rank": 4, "alpha": 4, "target_modules": sorted(sd.LORA_TARGETS)},
                      "scheduler": "DDIMScheduler", "latent_size": 16, "steps": 10, "guidance_scale": 5.0,
                      "min_sigma": 0.05, "eta": 1.0}
    assert (tmp_path / "run" / "reward_curves.png").stat().st_size > 0
    main(["sample", "--run", out, "--prompts", "a cat", "--out", str(tmp_path / "samples")])  # the pipeline found
    assert (tmp_path / "samples" / "0000_00.png").is_file()


@pytest.fixture(scope="module")
def tiny_sd3(tmp_path_factory):
    from minirl.sd import make_tiny_sd3
    return make_tiny_sd3(tmp_path_factory.mktemp("sd3"), sample_size=8)


def trainer_on(pipe, tmp_path, **policy_kwargs):
    from minirl import sd
    from minirl.rewards import jpeg_compressibility
    from minirl.tasks import Task
    from minirl.trainer import TrainConfig, Trainer
    sd.add_lora(sd.denoiser(pipe), rank=2)
    policy = sd.policy_from_pipeline(pipe, num_steps=4, **policy_kwargs)
    return Trainer(policy, [Task("jpeg", ["a cat"], jpeg_compressibility)],
                   TrainConfig(samples_per_epoch=2, sample_batch_size=2, train_batch_size=2, out=str(tmp_path)))


def test_a_flow_run_speaks_of_its_noise_level_and_its_transformer(tiny_sd3, tmp_path):
    from minirl import sd
    trainer = trainer_on(sd.load_pipeline(tiny_sd3), tmp_path, noise_level=0.5, sde_window=(0, 2))
    summary = trainer.summary()
    assert "FlowMatchEulerDiscreteScheduler, noise level 0.5, sde window [0, 2], guidance 5.0" in summary
    assert "eta" not in summary and "UNet" not in summary and "transformer passes" in summary
    record = trainer.log.run_info["policy"]
    assert (record["noise_level"], record["sde_window"], record["denoiser"]) == (0.5, [0, 2], "SD3Transformer2DModel")
    assert "eta" not in record


def test_a_ddpm_run_records_no_eta_and_the_summary_names_the_precision(tiny_sd, tmp_path):
    from minirl import sd
    pipe = sd.load_pipeline(tiny_sd, dtype=torch.bfloat16)
    sd.use_scheduler(pipe, "ddpm")
    trainer = trainer_on(pipe, tmp_path, eta=0.3)
    assert "eta" not in trainer.log.run_info["policy"] and "(DDPMScheduler, guidance 5.0)" in trainer.summary()
    assert "mixed precision no, trained weights in bfloat16, frozen UNet weights in bfloat16" in trainer.summary()
