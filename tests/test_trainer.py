"""The trainer end to end on a tiny random Stable Diffusion pipeline (CPU)."""

import json

import pytest
import torch
from diffusers import PNDMScheduler

from helpers import PROMPTS, tiny_policy, tiny_trainer, trainable
from minirl.rewards import jpeg_compressibility
from minirl.runlog import read_metrics
from minirl.sd import SD_BETAS, sd_scheduler
from minirl.tasks import Task
from minirl.trainer import TrainConfig, Trainer


def test_first_update_is_on_policy_with_cfg_and_lora(tiny_sd, tmp_path):
    trainer = tiny_trainer(tiny_sd, tmp_path)
    assert trainer.policy.do_cfg
    assert any("lora" in n for n in trainable(trainer))
    trainer.train()
    (m,) = read_metrics(tmp_path)
    assert m["max_abs_log_ratio_first_update"] < 1e-5  # ratio 1 to within 1e-5
    for key in ("epoch", "reward_mean", "reward_std", "approx_kl", "clipfrac", "grad_norm", "epoch_seconds"):
        assert key in m


def test_full_finetuning_first_update_is_on_policy_without_cfg(tiny_sd, tmp_path):
    policy = tiny_policy(tiny_sd, lora_rank=0, guidance=1.0)
    trainer = tiny_trainer(tiny_sd, tmp_path, policy=policy)
    assert not policy.do_cfg
    trainer.train()
    assert read_metrics(tmp_path)[0]["max_abs_log_ratio_first_update"] < 1e-5


def test_jpeg_compressibility_rises(tiny_sd, tmp_path):
    """A few epochs raise the mean reward by a margin of ~10 standard errors of an epoch's mean.
    The random tiny pipeline needs full fine-tuning and a high learning rate to move in minutes: its random
    VAE decoder paints texture whatever the latents, and LoRA on the attention of a random UNet barely
    changes the output."""
    policy = tiny_policy(tiny_sd, lora_rank=0, steps=10)
    trainer = tiny_trainer(tiny_sd, tmp_path, policy=policy, epochs=6, samples_per_epoch=32,
                           sample_batch_size=16, train_batch_size=16, lr=3e-3, clip_range=0.1)
    trainer.train()
    rewards = [m["reward_mean"] for m in read_metrics(tmp_path)]
    stderr = read_metrics(tmp_path)[0]["reward_std"] / 32**0.5
    assert rewards[-1] > rewards[0] + 0.01, rewards
    assert 0.01 > 5 * stderr


def test_checkpoint_resume_continues_exactly(tiny_sd, tmp_path):
    straight = tiny_trainer(tiny_sd, tmp_path / "a", epochs=3, advantages="per_prompt").train()

    class Killed(Exception):
        pass

    def kill_after_two(trainer, metrics):
        if trainer.epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        tiny_trainer(tiny_sd, tmp_path / "b", epochs=3, advantages="per_prompt").train(on_epoch_end=kill_after_two)
    resumed = tiny_trainer(tiny_sd, tmp_path / "b", epochs=3, advantages="per_prompt").resume()
    assert resumed.epoch == 2
    resumed.train()
    for name, value in trainable(straight).items():
        assert torch.equal(value, trainable(resumed)[name]), name
    drop = lambda ms: [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in ms]  # noqa: E731
    assert drop(read_metrics(tmp_path / "a")) == drop(read_metrics(tmp_path / "b"))
    files = {p.name for p in (tmp_path / "b" / "checkpoints" / "epoch_0003").iterdir()}
    assert files == {"state.safetensors", "state.json"}  # no pickle anywhere


def test_resume_refuses_a_changed_config(tiny_sd, tmp_path):
    tiny_trainer(tiny_sd, tmp_path).train()
    with pytest.raises(ValueError, match=r"defined differently \(lr: 0.0003 in the checkpoint, 0.1 now\); only"):
        tiny_trainer(tiny_sd, tmp_path, lr=0.1).resume()


def test_steps_offset_0_is_guarded_and_weights_stay_finite(tiny_sd, tmp_path):
    """steps_offset=0 ends on a step with sigma_t = 0: it is sampled, never trained on."""
    scheduler = sd_scheduler(steps_offset=0)
    policy = tiny_policy(tiny_sd, steps=6, scheduler=scheduler, min_sigma=0.0)
    assert policy.sigmas[-1] == 0 and policy.num_steps - 1 not in policy.trainable_steps.tolist()
    trainer = tiny_trainer(tiny_sd, tmp_path, policy=policy, timestep_fraction=1.0).train()
    assert all(torch.isfinite(v).all() for v in trainable(trainer).values())


def test_nan_weights_stop_the_run_naming_where(tiny_sd, tmp_path):
    trainer = tiny_trainer(tiny_sd, tmp_path)
    with torch.no_grad():
        next(p for p in trainer.policy.unet.parameters() if p.requires_grad).fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"sampled log_probs is not finite \(epoch 0, task 'jpeg'.*dtype torch.float32"):
        trainer.train()


@pytest.mark.parametrize("reward, error, match", [
    (lambda images, prompts, meta: (torch.zeros(len(images) + 1), {}), ValueError, "shape"),
    (lambda images, prompts, meta: (torch.full((len(images),), float("nan")), {}), ValueError, "non-finite"),
    (lambda images, prompts, meta: ([0.0] * len(images), {}), TypeError, "type list"),
])
def test_bad_reward_fails_before_any_update(tiny_sd, tmp_path, reward, error, match):
    trainer = tiny_trainer(tiny_sd, tmp_path, reward=reward)
    before = trainable(trainer)
    with pytest.raises(error, match=match):
        trainer.train()
    assert trainer.global_step == 0 and all(torch.equal(v, trainable(trainer)[n]) for n, v in before.items())


@pytest.mark.parametrize("config, match", [
    (dict(samples_per_epoch=6, sample_batch_size=4), "multiple of sample_batch_size=4"),
    (dict(train_batch_size=3), "multiple of train_batch_size=3; valid train batch sizes: \\[1, 2, 4\\]"),
    (dict(epochs=0), "epochs must be an int >= 1"),
    (dict(timestep_fraction=0.0), "timestep_fraction must be a finite number > 0 and <= 1"),
    (dict(loss="ddpg"), "loss must be one of"),
])
def test_bad_config_is_named_before_work(tiny_sd, tmp_path, config, match):
    with pytest.raises(ValueError, match=match):
        tiny_trainer(tiny_sd, tmp_path, **config)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(eta=0.0), ValueError, "eta must be > 0"),
    (dict(steps=0), ValueError, "num_steps must be an int >= 1"),
    (dict(scheduler=PNDMScheduler()), TypeError, "PNDMScheduler is not supported"),
])
def test_bad_policy_settings(tiny_sd, kwargs, error, match):
    with pytest.raises(error, match=match):
        tiny_policy(tiny_sd, **kwargs)


def test_empty_prompts_and_bad_pipelines(tiny_sd, tmp_path):
    from minirl.rewards import jpeg_compressibility
    from minirl.sd import load_pipeline
    with pytest.raises(ValueError, match="empty prompt list"):
        Task("t", [], jpeg_compressibility)
    with pytest.raises(ValueError, match="fp16 on CPU is not supported"):
        load_pipeline(tiny_sd, dtype=torch.float16)
    (tmp_path / "model_index.json").write_text("{}")
    (tmp_path / "unet").mkdir()
    with pytest.raises(FileNotFoundError, match=r"missing \['vae', 'text_encoder', 'tokenizer', 'scheduler'\]"):
        load_pipeline(tmp_path)


def test_distribution_reward_is_called_per_group(tiny_sd, tmp_path):
    calls = []

    def parity(images, prompts, metadata):
        calls.append(list(prompts))
        return torch.full((len(images),), float(len(calls))), {}
    parity.distribution = True
    policy = tiny_policy(tiny_sd, steps=3, min_sigma=0.0)
    trainer = tiny_trainer(tiny_sd, tmp_path, reward=parity, policy=policy, group_size=2)
    batch, stats = trainer.sample(trainer.tasks[0], 0)
    assert len(calls) == 2 and all(len(set(c)) == 1 and len(c) == 2 for c in calls)
    assert stats["reward_mean"] == 1.5


def test_run_folder_records_config_and_images(tiny_sd, tmp_path):
    tiny_trainer(tiny_sd, tmp_path, image_every=1).train()
    record = json.loads((tmp_path / "config.json").read_text())
    assert record["config"]["seed"] == 0 and record["versions"]["torch"]
    assert (tmp_path / "images" / "jpeg_epoch0001.png").is_file()


def test_ddpm_policy_trains_and_leaves_out_its_deterministic_last_step(tiny_sd, tmp_path):
    from diffusers import DDPMScheduler
    scheduler = DDPMScheduler(**SD_BETAS, clip_sample=False)
    policy = tiny_policy(tiny_sd, steps=4, scheduler=scheduler, min_sigma=0.0)
    assert policy.sigmas[-1] == 0 and policy.trainable_steps.tolist() == [0, 1, 2]
    tiny_trainer(tiny_sd, tmp_path, policy=policy).train()
    assert read_metrics(tmp_path)[0]["max_abs_log_ratio_first_update"] < 1e-5


def test_group_relative_advantages(tiny_sd, tmp_path):
    policy = tiny_policy(tiny_sd, steps=3, min_sigma=0.0)
    trainer = tiny_trainer(tiny_sd, tmp_path, policy=policy, advantages="group", group_size=2)
    batch, _ = trainer.sample(trainer.tasks[0], 0)
    a = batch["advantages"]
    torch.testing.assert_close(a.abs(), torch.ones(4), atol=1e-3, rtol=0)  # two samples a group: -1 and +1
    torch.testing.assert_close(a[[0, 2]], -a[[1, 3]], atol=1e-3, rtol=0)


def test_shared_noise_starts_each_group_from_one_x_T(tiny_sd, tmp_path):
    """DanceGRPO's shared initial noise: a group's chains start alike and part with the sampler's noise."""
    policy = tiny_policy(tiny_sd, steps=3, min_sigma=0.0)
    trainer = tiny_trainer(tiny_sd, tmp_path, policy=policy, group_size=2, shared_noise=True)
    x = trainer.sample(trainer.tasks[0], 0)[0]["latents"]
    torch.testing.assert_close(x[0, 0], x[1, 0], atol=0, rtol=0)
    torch.testing.assert_close(x[2, 0], x[3, 0], atol=0, rtol=0)
    assert (x[0, 0] - x[2, 0]).abs().max() > 0.1 and (x[0, -1] - x[1, -1]).abs().max() > 1e-3
    unshared = tiny_trainer(tiny_sd, tmp_path / "u", policy=policy, group_size=2).sample(trainer.tasks[0], 0)[0]
    assert (unshared["latents"][0, 0] - unshared["latents"][1, 0]).abs().max() > 0.1
    with pytest.raises(ValueError, match="shared_noise=True shares x_T within a group; task 'jpeg' has group_size 1"):
        tiny_trainer(tiny_sd, tmp_path, policy=policy, shared_noise=True)
    with pytest.raises(ValueError, match=r"x_T must have shape \(2, 4, 16, 16\)"):
        policy.rollout(["a cat", "a dog"], x_T=torch.zeros(1, 4, 4, 4))


def test_pretraining_loss_step_follows_the_tasks(tiny_sd, tmp_path):
    """Algorithm 1: after the task updates, one gradient step on beta * L_pre with pretraining data."""
    def pretrain_data(generator):
        return torch.rand(2, 3, 32, 32, generator=generator), ["a cat", "a dog"]
    policy = tiny_policy(tiny_sd, steps=3, min_sigma=0.0)
    config = TrainConfig(epochs=1, samples_per_epoch=4, sample_batch_size=4, train_batch_size=4, image_every=0,
                         pretrain_beta=0.5, out=str(tmp_path))
    trainer = Trainer(policy, [Task("jpeg", PROMPTS, jpeg_compressibility)], config, pretrain_data=pretrain_data)
    trainer.train()
    (m,) = read_metrics(tmp_path)
    assert m["global_step"] == 2 and m["pretrain_loss"] > 0 and m["pretrain_grad_norm"] > 0
    with pytest.raises(ValueError, match="pretrain_beta=0.5 needs pretrain_data"):
        Trainer(policy, [Task("jpeg", PROMPTS, jpeg_compressibility)], config)


def test_kl_to_the_pretrained_model(tiny_sd, tmp_path):
    """DPOK's regulariser: zero while LoRA is still at its zero init, positive once it has moved."""
    trainer = tiny_trainer(tiny_sd, tmp_path, epochs=2, kl_weight=0.01, lr=1e-2, train_batch_size=4)
    trainer.train()
    first, second = read_metrics(tmp_path)
    assert first["kl"] == 0.0 and first["max_abs_log_ratio_first_update"] < 1e-5
    assert second["kl"] > 0
    with pytest.raises(ValueError, match="kl_weight=0.01 needs a LoRA UNet"):
        tiny_trainer(tiny_sd, tmp_path, kl_weight=0.01, policy=tiny_policy(tiny_sd, lora_rank=0))


def test_micro_batch_changes_memory_not_the_gradient(tiny_sd, tmp_path):
    grads = []
    for micro in (2, 8):
        trainer = tiny_trainer(tiny_sd, tmp_path / str(micro), train_batch_size=4, train_micro_batch=micro)
        batch, _ = trainer.sample(trainer.tasks[0], 0)
        trainer.step = lambda where: torch.tensor(0.0)  # keep the accumulated gradient
        trainer.update(trainer.tasks[0], batch, torch.arange(4), 0, 0)
        grads.append(torch.cat([p.grad.flatten() for p in trainer.policy.unet.parameters() if p.requires_grad]))
    assert grads[0].norm() > 0
    assert (grads[0] - grads[1]).norm() / grads[0].norm() < 2e-5  # float32 sums in another order


def test_a_task_may_choose_its_own_advantages(tiny_sd, tmp_path):
    """A distribution reward needs advantages across groups even when the run normalises within them."""
    policy = tiny_policy(tiny_sd)
    with pytest.raises(ValueError, match="advantages='group' needs tasks with group_size >= 2"):
        Trainer(policy, [Task("jpeg", PROMPTS, jpeg_compressibility)],
                TrainConfig(advantages="group", out=str(tmp_path)))
    task = Task("jpeg", PROMPTS, jpeg_compressibility, advantages="batch")
    Trainer(policy, [task], TrainConfig(advantages="group", out=str(tmp_path)))
    with pytest.raises(ValueError, match="advantages must be None, 'batch', 'per_prompt' or 'group'; got 'global'"):
        Task("jpeg", PROMPTS, jpeg_compressibility, advantages="global")


def test_a_task_weight_scales_its_gradient(tiny_sd, tmp_path):
    grads = []
    for weight in (1.0, 2.5):
        trainer = tiny_trainer(tiny_sd, tmp_path / str(weight), train_batch_size=4)
        trainer.tasks[0].weight = weight
        batch, _ = trainer.sample(trainer.tasks[0], 0)
        trainer.step = lambda where: torch.tensor(0.0)  # keep the accumulated gradient
        trainer.update(trainer.tasks[0], batch, torch.arange(4), 0, 0)
        grads.append(torch.cat([p.grad.flatten() for p in trainer.policy.unet.parameters() if p.requires_grad]))
    assert grads[0].norm() > 0
    assert (2.5 * grads[0] - grads[1]).norm() / grads[1].norm() < 2e-5
    for weight in (0.0, -1.0, float("nan"), "2"):
        with pytest.raises(ValueError, match=f"task 'jpeg': weight must be a finite number > 0; got {weight!r}"):
            Task("jpeg", PROMPTS, jpeg_compressibility, weight=weight)
