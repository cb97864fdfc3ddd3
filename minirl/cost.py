"""What an epoch will cost, printed when a run starts: time from one timed pass of each kind of work, and
memory (measured on a GPU; on a CPU, the weights, gradients and optimizer state, without activations).

The probe samples one denoising step of a sample batch, decodes it, scores it with each task's learned reward
model (a plain reward function, which may keep state, is not called), and runs one training forward and backward
pass on a micro batch of transitions; it leaves the weights, the optimizer and every random stream untouched (its
gradients are discarded), so a run with the probe equals one without.
"""

import time

import torch

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


def estimate(trainer):
    """Lines that estimate one epoch's time and the peak memory of this process."""
    cfg, policy, acc = trainer.cfg, trainer.policy, trainer.acc
    device = acc.device
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    n = cfg.sample_batch_size
    generator = torch.Generator().manual_seed(0)
    prompts, _ = trainer.tasks[0].draw(cfg.seed, 0, 0, range(n))
    with torch.no_grad():
        embeds = policy.encode_prompts(prompts)
        x = torch.randn((n, *policy.latent_shape), generator=generator).to(device)
        t = policy.scheduler.timesteps[int(policy.trainable_steps[0])]
        (x_prev, _), t_step = _timed(lambda: policy.step(x, t, embeds, generator=generator), device)
        images, t_decode = _timed(lambda: policy.decode(x_prev), device)
        t_reward = []  # only minirl's learned rewards are timed: a user's reward may keep state (a log, a curve)
        for task in trainer.tasks:
            task_prompts, task_metadata = task.draw(cfg.seed, 0, 0, range(n))
            timed = isinstance(task.reward, RewardModel)
            t_reward.append(_timed(lambda: trainer.reward(task, images, task_prompts, task_metadata), device)[1]
                            if timed else 0.0)
    micro = min(cfg.train_micro_batch or cfg.train_batch_size, n)

    def train_pass():  # no gradient all-reduce: the probe has no collective, so one failing process stops alone
        with acc.autocast(), acc.no_sync(policy.unet):
            log_prob, _ = policy.log_prob(x[:micro], x_prev[:micro], t, embeds[:micro])
            acc.backward(log_prob.mean())

    _, t_train = _timed(train_pass, device)
    trainer.optimizer.zero_grad(set_to_none=True)

    batches = trainer.local_samples // n
    transitions = trainer.local_samples * cfg.inner_epochs * trainer.n_train
    per_task = batches * (policy.num_steps * t_step + t_decode) + transitions / micro * t_train
    epoch = sum(per_task + batches * r for r in t_reward) + (t_train if trainer.pretrain_data else 0.0)
    lines = [f"estimated epoch time on {device}: {epoch:.1f} s (per task: {batches} x {policy.num_steps} sampling "
             f"passes of {t_step * 1e3:.0f} ms, {batches} decodes of {t_decode * 1e3:.0f} ms, reward "
             f"{', '.join(f'{r * 1e3:.0f}' for r in t_reward)} ms a batch, {transitions / micro:.0f} training passes "
             f"of {t_train * 1e3:.0f} ms)"]
    trainable = sum(p.numel() for p in trainer.params)
    weights = _bytes([policy.unet, policy.text_encoder] + ([policy.vae] if policy.vae is not None else [])
                     + [t.reward for t in trainer.tasks if isinstance(t.reward, torch.nn.Module)])
    state = trainable * (4 + 8)  # fp32 gradients + AdamW's two moments
    if cuda:
        peak = torch.cuda.max_memory_allocated(device) + trainable * 8  # + AdamW's moments, made at the first step
        lines.append(f"estimated peak GPU memory: {peak / 2**30:.1f} GiB (measured in the probe, plus AdamW's state)")
    else:
        lines.append(f"memory: {(weights + state) / 2**30:.2f} GiB of weights, gradients and AdamW state "
                     f"({trainable / 1e6:.1f}M trainable parameters), plus activations")
    return lines
