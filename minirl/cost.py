"""What an epoch will cost, printed when a run starts: time from one timed pass of each kind of work, and
memory (measured on a GPU; on a CPU, the weights, gradients and optimizer state, without activations), with the
denoising chains an epoch keeps for training on both.

The probe samples one denoising step of a sample batch, decodes it, scores it with each task's learned reward
model (a plain reward function, which may keep state, is not called), runs one training forward and backward
pass on a micro batch of transitions, the KL term's reference pass (adapters off) when the run has one, and the
L_pre step's forward and backward pass on a batch of the pretraining data when the run has it; it leaves the
weights, the optimizer and every random stream untouched (its gradients are discarded), so a run with the probe
equals one without.
"""

import math
import time

import torch

from minirl.losses import denoising_loss
from minirl.rewards.loading import RewardModel


def _timed(fn, device):
    """fn's result and its seconds, the second of two calls (the first warms up kernels and caches)."""
    fn()
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - start


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _bytes(modules):
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters())


def probe(trainer):
    """Seconds of each kind of work: {"step": a sampling step of a sample batch, "decode": its decode, "reward":
    [each task's learned reward on it, 0 for a plain function], "train": a training pass on a micro batch,
    "reference": the KL term's reference pass on it (0 without KL), "pretrain": the L_pre step (0 without)}, and the
    bytes of one sample's stored chain."""
    cfg, policy, acc = trainer.cfg, trainer.policy, trainer.acc
    device = acc.device
    n = cfg.sample_batch_size
    generator = torch.Generator().manual_seed(0)
    prompts, _ = trainer.tasks[0].draw(cfg.seed, 0, 0, range(n))
    seconds = {"reference": 0.0, "pretrain": 0.0}
    with torch.no_grad():
        embeds = policy.encode_prompts(prompts)
        x = torch.randn((n, *policy.latent_shape), generator=generator).to(device)
        t = policy.scheduler.timesteps[int(policy.trainable_steps[0])]
        (x_prev, _), seconds["step"] = _timed(lambda: policy.step(x, t, embeds, generator=generator), device)
        images, seconds["decode"] = _timed(lambda: policy.decode(x_prev), device)
        seconds["reward"] = []  # only minirl's learned rewards are timed: a user's may keep state (a log, a curve)
        for task in trainer.tasks:
            task_prompts, task_metadata = task.draw(cfg.seed, 0, 0, range(n))
            timed = isinstance(task.reward, RewardModel)
            seconds["reward"].append(_timed(lambda: trainer.reward(task, images, task_prompts, task_metadata),
                                            device)[1] if timed else 0.0)
    micro = min(cfg.train_micro_batch or cfg.train_batch_size, n)

    def train_pass():  # no gradient all-reduce: the probe has no collective, so one failing process stops alone
        with acc.autocast(), acc.no_sync(policy.unet):
            log_prob, _ = policy.log_prob(x[:micro], x_prev[:micro], t, embeds[:micro])
            acc.backward(log_prob.mean())

    def pretrain_pass():  # Trainer.pretrain_step's work, its data included, without the optimizer step
        pictures, captions = trainer.pretrain_data(torch.Generator().manual_seed(0))
        with acc.autocast(), acc.no_sync(policy.unet):
            x0, text = policy.encode_images(pictures), policy.encode_prompts(captions)
            acc.backward(denoising_loss(*policy.denoising_prediction(x0, text, generator))[0])

    _, seconds["train"] = _timed(train_pass, device)
    if cfg.kl_weight > 0:
        with acc.autocast():
            _, seconds["reference"] = _timed(lambda: trainer.reference_mean(x[:micro], t, embeds[:micro]), device)
    if trainer.pretrain_data is not None and cfg.pretrain_beta > 0:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # the VAE's sampling draws
            _, seconds["pretrain"] = _timed(pretrain_pass, device)
    trainer.optimizer.zero_grad(set_to_none=True)
    chain = (policy.num_steps + 1) * math.prod(policy.latent_shape) * 4 + policy.num_steps * 4 \
        + embeds[0].numel() * embeds.element_size()  # fp32 latents x_T .. x_0 and log-probs, the prompt's embedding
    return seconds, chain


def _counts(trainer):
    """(sample batches, training passes at the probe's micro batch) of a task's epoch on this process."""
    cfg = trainer.cfg
    micro = min(cfg.train_micro_batch or cfg.train_batch_size, cfg.sample_batch_size)
    passes = trainer.local_samples * cfg.inner_epochs * trainer.n_train / micro
    return trainer.local_samples // cfg.sample_batch_size, passes


def epoch_seconds(trainer, seconds):
    """An epoch's time from the probe's: per task, its sample batches (steps, decode, reward) and its training
    passes (with the KL term's reference passes); then the L_pre step."""
    batches, passes = _counts(trainer)
    sampling = batches * (trainer.policy.num_steps * seconds["step"] + seconds["decode"])
    training = passes * (seconds["train"] + seconds["reference"])
    return sum(sampling + batches * r + training for r in seconds["reward"]) + seconds["pretrain"]


def estimate(trainer):
    """Lines that estimate one epoch's time and the peak memory of this process."""
    cfg, policy, device = trainer.cfg, trainer.policy, trainer.acc.device
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    seconds, chain = probe(trainer)
    batches, passes = _counts(trainer)
    extra = "".join([f", as many KL reference passes of {seconds['reference'] * 1e3:.0f} ms" if cfg.kl_weight > 0
                     else "", f"; then an L_pre step of {seconds['pretrain'] * 1e3:.0f} ms" if seconds["pretrain"]
                     else ""])
    lines = [f"estimated epoch time on {device}: {epoch_seconds(trainer, seconds):.1f} s (per task: {batches} x "
             f"{policy.num_steps} sampling passes of {seconds['step'] * 1e3:.0f} ms, {batches} decodes of "
             f"{seconds['decode'] * 1e3:.0f} ms, reward {', '.join(f'{r * 1e3:.0f}' for r in seconds['reward'])} ms "
             f"a batch, {passes:.0f} training passes of {seconds['train'] * 1e3:.0f} ms{extra})"]
    trainable = sum(p.numel() for p in trainer.params)
    chains = trainer.local_samples * chain  # one task's at a time: a task's chains go when it has trained on them
    kept = f"the {trainer.local_samples} chains an epoch keeps ({chains / 2**30:.2f} GiB)"
    if cuda:
        peak = torch.cuda.max_memory_allocated(device) + trainable * 8 + chains  # + AdamW's moments, made later
        total = torch.cuda.get_device_properties(device).total_memory
        lines.append(f"estimated peak GPU memory: {peak / 2**30:.1f} GiB (measured in the probe, plus AdamW's state "
                     f"and {kept})")
        if peak > total:
            lines.append(f"this exceeds the GPU's {total / 2**30:.1f} GiB: the run would stop out of memory; use more "
                         f"processes, fewer --samples-per-epoch or smaller batches")
    else:
        weights = _bytes([policy.unet, policy.text_encoder] + ([policy.vae] if policy.vae is not None else [])
                         + [t.reward for t in trainer.tasks if isinstance(t.reward, torch.nn.Module)])
        state = trainable * (4 + 8)  # fp32 gradients + AdamW's two moments
        lines.append(f"memory: {(weights + state) / 2**30:.2f} GiB of weights, gradients and AdamW state "
                     f"({trainable:,} trainable parameters) and {kept}, plus activations")
    return lines
