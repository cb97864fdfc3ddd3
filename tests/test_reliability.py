"""Traps, each with a test that fails on the bug. Issue 16's: the L_pre target and the KL term against hand
values, caption dropout in L_pre, a policy that owns its scheduler, fp16's loss scaler, and the on-policy ratio
with LoRA away from its zero start. Issue 25's, the run folder's: a resume that falls back from a damaged
checkpoint, a metrics rewrite that a kill cannot tear, a lock held for the life of a run, a full disk named."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from diffusers.utils.torch_utils import randn_tensor

from helpers import PROMPTS, tiny_policy, tiny_trainer
from minirl import runlog
from minirl.runlog import read_metrics
from minirl.sd import sd_scheduler
from minirl.tasks import Task
from minirl.trainer import TrainConfig, Trainer


def perturb_lora(policy, scale=0.01, seed=1):
    """LoRA's up-projection B away from zero (it starts at zero, where every adapter is a no-op)."""
    generator = torch.Generator().manual_seed(seed)
    for name, p in policy.unet.named_parameters():
        if "lora_B" in name:
            p.data = scale * torch.randn(p.shape, generator=generator)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_the_l_pre_target_of_each_prediction_type(tiny_sd, prediction_type):
    policy = tiny_policy(tiny_sd, scheduler=sd_scheduler(prediction_type=prediction_type))
    x0 = torch.randn(3, 4, 16, 16)
    t = torch.tensor([10, 500, 990])
    embeds = policy.encode_prompts(["cat"] * 3)
    _, target = policy.denoising_prediction(x0, embeds, torch.Generator().manual_seed(7), timesteps=t)
    noise = randn_tensor(x0.shape, generator=torch.Generator().manual_seed(7))
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2  # SD's scaled_linear
    alpha_bar = torch.cumprod(1 - betas, 0)[t].float().view(-1, 1, 1, 1)
    expected = {"epsilon": noise, "sample": x0,
                "v_prediction": alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0}[prediction_type]
    torch.testing.assert_close(target, expected, atol=1e-5, rtol=1e-5)


def test_the_kl_term_pulls_toward_the_pretrained_model(tiny_sd, tmp_path):
    """With constant rewards (zero advantages) the loss is kl_weight * KL alone: the logged KL is the hand formula
    ||mu - mu_ref||^2 / (2 sigma_t^2) averaged over dimensions and transitions, and a step on it lowers it on the
    transitions it trained on."""
    policy = tiny_policy(tiny_sd)
    perturb_lora(policy, scale=0.05)
    constant = lambda images, prompts, metadata: (torch.ones(len(images)), {})  # noqa: E731
    trainer = tiny_trainer(tiny_sd, tmp_path, reward=constant, policy=policy, kl_weight=1.0, lr=1e-3,
                           train_batch_size=4)
    batch, _ = trainer.sample(trainer.tasks[0], 0)
    steps = trainer.policy.trainable_steps

    def kl_by_hand():
        kls = []
        for j in steps.tolist():
            x_t, t = batch["latents"][:, j], batch["timesteps"][j]
            with torch.no_grad():
                mean, sigma = policy.transition(x_t, t, batch["embeds"])
                ref = trainer.reference_mean(x_t, t, batch["embeds"])
            kls.append(((mean - ref) ** 2 / (2 * sigma.view(-1, 1, 1, 1) ** 2)).mean())
        return float(torch.stack(kls).mean())

    before = kl_by_hand()
    metrics = trainer.learn(trainer.tasks[0], 0, batch)  # one optimizer step over every trainable transition
    assert before > 0 and metrics["kl"] == pytest.approx(before, rel=1e-4)
    after = kl_by_hand()
    assert after < 0.9 * before, (before, after)  # the KL term's gradient points toward the reference


@pytest.mark.parametrize("fraction, expected", [(0.0, {"cat"}), (1.0, {""}), (0.5, {"", "cat"})])
def test_l_pre_drops_captions_as_sd_training_does(tiny_sd, tmp_path, fraction, expected):
    policy = tiny_policy(tiny_sd)
    seen = []
    encode = policy.encode_prompts
    policy.encode_prompts = lambda prompts: seen.append(list(prompts)) or encode(prompts)
    data = lambda generator: (torch.rand(32, 3, 32, 32, generator=generator), ["cat"] * 32)  # noqa: E731
    config = TrainConfig(epochs=1, samples_per_epoch=4, sample_batch_size=4, train_batch_size=4, image_every=0,
                         pretrain_beta=1.0, pretrain_uncond_fraction=fraction, out=str(tmp_path))
    Trainer(policy, [Task("jpeg", ["dog"], lambda i, p, m: (torch.rand(len(i)), {}))], config,
            pretrain_data=data).train()
    assert set(seen[-1]) == expected          # the L_pre batch is encoded last


def test_two_policies_on_one_scheduler_keep_their_own_schedules(tiny_sd):
    scheduler = sd_scheduler()
    a = tiny_policy(tiny_sd, steps=4, scheduler=scheduler)
    b = tiny_policy(tiny_sd, steps=10, scheduler=scheduler)
    assert a.num_steps == 4 and b.num_steps == 10
    assert a.scheduler.timesteps.tolist() == [751, 501, 251, 1]


def test_an_overflow_under_fp16s_loss_scaler_is_skipped_not_fatal(tiny_sd, tmp_path, monkeypatch):
    """fp16 runs only on GPUs, so the scaler is stood in for: an inf gradient norm with a scaler skips the step
    (counted, and the scaler's state is checkpointed); without one it stops the run."""
    trainer = tiny_trainer(tiny_sd, tmp_path)
    monkeypatch.setattr(trainer.acc, "clip_grad_norm_", lambda params, max_norm: torch.tensor(math.inf))
    monkeypatch.setattr(trainer.optimizer, "step", lambda *a, **k: None)
    with pytest.raises(FloatingPointError, match="gradient norm is not finite"):
        trainer.step("jpeg")

    class Scaler:
        def state_dict(self):
            return {"scale": 1024.0, "growth_tracker": 3}

    monkeypatch.setattr(trainer.acc, "scaler", Scaler())
    monkeypatch.setattr(type(trainer.acc), "optimizer_step_was_skipped", property(lambda self: True))
    assert math.isinf(trainer.step("jpeg")) and trainer.skipped_steps == 1
    assert trainer.state_dict()["scaler"] == {"scale": 1024.0, "growth_tracker": 3}


def test_the_first_update_is_on_policy_with_lora_away_from_zero(tiny_sd, tmp_path):
    policy = tiny_policy(tiny_sd)
    perturb_lora(policy, scale=0.05)
    trainer = tiny_trainer(tiny_sd, tmp_path, policy=policy)
    with torch.no_grad():  # the adapters change the model: the test would notice a ratio computed without them
        x, embeds = torch.randn(1, 4, 16, 16), policy.encode_prompts(["cat"])
        on = policy.predict_noise(x, 500, embeds)
        policy.unet.disable_adapters()
        off = policy.predict_noise(x, 500, embeds)
        policy.unet.enable_adapters()
    assert (on - off).abs().max() > 1e-3
    trainer.train()
    assert read_metrics(tmp_path)[0]["max_abs_log_ratio_first_update"] < 1e-5



def test_a_resume_falls_back_from_a_damaged_checkpoint_saying_so(tiny_sd, tmp_path, capsys):
    tiny_trainer(tiny_sd, tmp_path, epochs=2).train()
    (tmp_path / "checkpoints" / "epoch_0002" / "state.safetensors").write_bytes(b"torn")
    resumed = tiny_trainer(tiny_sd, tmp_path, epochs=2).resume()
    assert resumed.epoch == 1 and [m["epoch"] for m in read_metrics(tmp_path)] == [1]
    assert re.search(r"checkpoint '.*epoch_0002' is damaged: state.safetensors cannot be read .*; resuming from "
                     r"epoch_0001, the newest complete checkpoint", capsys.readouterr().out)


def test_a_kill_while_resuming_leaves_the_metrics_whole(tmp_path):
    """The resume keeps the metrics of the checkpoint's epochs and drops the rest, through a temporary file: a
    kill at any line leaves the old file or the new one, never a truncated one."""
    from test_checkpoint import states_a_kill_would_leave
    lines = "".join(json.dumps({"epoch": e, "reward_mean": 0.1 * e}) + "\n" for e in (1, 2, 3))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text(lines)
    log = runlog.RunLog(tmp_path / "run", Accelerator(cpu=True), {})
    steps = {(runlog.__file__, "resumed"), (runlog.__file__, "_write"),  # and pathlib's, which truncates first
             (Path.write_text.__code__.co_filename, "write_text")}
    states = states_a_kill_would_leave(tmp_path / "run", lambda: log.resumed(2), tmp_path / "killed", steps)
    assert len(states) > 3
    kept = "".join(lines.splitlines(keepends=True)[:2])
    for state in states + [tmp_path / "run"]:
        assert (state / "metrics.jsonl").read_text() in (lines, kept), state
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == kept


def test_the_lock_is_held_for_the_life_of_a_run(tiny_sd, tmp_path):
    """A run holds its folder while it trains: another process cannot take the lock then; it can after."""
    probe = [sys.executable, "-c", "import fcntl, sys; fcntl.flock(open(sys.argv[1], 'a+'), fcntl.LOCK_EX | "
                                   "fcntl.LOCK_NB)", str(tmp_path / ".lock")]
    seen = []
    tiny_trainer(tiny_sd, tmp_path).train(on_epoch_end=lambda trainer, metrics: seen.append(
        subprocess.run(probe, capture_output=True, text=True)))
    assert seen[0].returncode != 0 and "BlockingIOError" in seen[0].stderr
    assert subprocess.run(probe).returncode == 0


def test_a_full_disk_while_logging_names_the_file(tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    (tmp_path / "metrics.jsonl").symlink_to("/dev/full")
    with pytest.raises(OSError, match=r"No space left on device: '.*metrics.jsonl'"):
        runlog.RunLog(tmp_path, Accelerator(cpu=True), {}).metrics({"epoch": 1})
