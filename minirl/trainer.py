"""The RL loop of the paper's Algorithm 1 (DDPO's trainer, several tasks, the L_pre regulariser).

Each epoch (an "iteration" in the paper), theta_old <- theta, then for each task in turn:
  1. sample: roll out `samples_per_epoch` denoising chains with the current policy (all processes together);
  2. reward: score the images (validated), distribution rewards once per group of one prompt;
  3. advantages: normalise over the global batch (or per prompt, or per group) and clip;
  4. PPO: for each train batch, pick a random subset of each chain's timesteps and take one optimizer step
     on the clipped surrogate averaged over those transitions (inner_epochs passes over the samples);
then, if pretraining data is given, one gradient step on beta * L_pre.

The trainer knows the math (mdp, losses, advantages) and the reward protocol, no particular reward or tier.
Every random draw (prompts, noise, timesteps, minibatches) comes from a seed derived from (seed, epoch, task,
sample), so a chain does not depend on the batch size or the number of processes, and a resumed run continues
exactly as an uninterrupted one. Every eval_every epochs, held-out prompts are sampled with fixed seeds and scored (`evaluate`).
"""

import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers import DDIMScheduler

from minirl import advantages as adv
from minirl import checkpoint, cost, runlog
from minirl.losses import denoising_loss, kl_to_reference, ppo_loss, reinforce_loss
from minirl.rewards import validate
from minirl.tasks import seed_for


# what a resumed run may change: its length and its logging (config fields and command-line arguments), and
# the folder's path (the run is where its checkpoint is: a moved folder, or its path written another way)
RESUMABLE_CHANGES = {"epochs", "save_every", "keep_checkpoints", "image_every", "resume", "overwrite", "tracker",
                     "verbose", "out", "eval_every", "eval_prompts"}


@dataclass
class TrainConfig:
    """One RL run. samples_per_epoch is global (all processes); batch sizes are per process."""
    epochs: int = 10                 # RL iterations
    samples_per_epoch: int = 16      # samples per task per epoch, all processes together
    sample_batch_size: int = 8       # chains rolled out together (UNet batch x2 with guidance)
    train_batch_size: int = 4        # samples per optimizer step
    train_micro_batch: int = 0       # transitions per UNet call in training (0: train_batch_size); memory knob
    timestep_fraction: float = 1.0   # fraction of the trainable timesteps trained per chain
    inner_epochs: int = 1            # passes of PPO over each batch of samples
    loss: str = "ppo"                # "ppo" (clipped surrogate) or "reinforce"
    clip_range: float = 1e-4         # PPO epsilon, on a log-prob averaged over dimensions
    advantages: str = "batch"        # "batch" (paper), "per_prompt" (DDPO) or "group"
    adv_clip: float = 5.0            # advantages clipped to +-adv_clip
    lr: float = 3e-4                 # AdamW learning rate
    weight_decay: float = 1e-4       # AdamW weight decay (DDPO's)
    max_grad_norm: float = 1.0       # gradient clipping
    pretrain_beta: float = 0.0       # weight of the L_pre step (0: no regulariser)
    pretrain_uncond_fraction: float = 0.0  # L_pre samples whose caption is dropped (`minirl train`: 0.1, as SD)
    kl_weight: float = 0.0           # weight of KL to the pretrained model (LoRA disabled; DPOK uses 0.01)
    shared_noise: bool = False       # one x_T a group (DanceGRPO): a group's samples differ by the sampler's noise
    seed: int = 0
    out: str = "runs/rl"             # run folder: metrics.jsonl, config.json, images/, checkpoints/
    save_every: int = 1              # checkpoint every N epochs (and at the end)
    keep_checkpoints: int = 2        # the newest N checkpoints are kept (>= 1)
    image_every: int = 1             # image grid every N epochs (0: never)
    eval_every: int = 0              # evaluate on held-out prompts (Trainer's eval_prompts) every N epochs (0: never)
    verbose: bool = False            # print the batch arithmetic and a timed cost estimate at the start

    def check(self, num_processes, num_tasks):
        """Validate every setting and the batch arithmetic before any work; return the per-process sample count."""
        for name in ("epochs", "samples_per_epoch", "sample_batch_size", "train_batch_size", "inner_epochs",
                     "save_every", "keep_checkpoints"):
            check_number(self, name, minimum=1, integer=True)
        for name in ("train_micro_batch", "image_every", "eval_every", "seed"):
            check_number(self, name, minimum=0, integer=True)
        for name in ("clip_range", "adv_clip", "lr", "max_grad_norm"):
            check_number(self, name, minimum=0, inclusive=False)
        for name in ("weight_decay", "pretrain_beta", "kl_weight"):
            check_number(self, name, minimum=0)
        check_number(self, "timestep_fraction", minimum=0, inclusive=False, maximum=1)
        check_number(self, "pretrain_uncond_fraction", minimum=0, maximum=1)
        if self.samples_per_epoch % num_processes:
            raise ValueError(f"samples_per_epoch={self.samples_per_epoch} must divide among {num_processes} "
                             f"processes; valid: a multiple of {num_processes}")
        local = self.samples_per_epoch // num_processes
        if local % self.sample_batch_size:
            raise ValueError(f"samples per process ({local}) must be a multiple of sample_batch_size="
                             f"{self.sample_batch_size}; valid sample batch sizes: {_divisors(local)}")
        if local % self.train_batch_size:
            raise ValueError(f"samples per process ({local}) must be a multiple of train_batch_size="
                             f"{self.train_batch_size}; valid train batch sizes: {_divisors(local)}")
        choices = {"loss": ("ppo", "reinforce"), "advantages": ("batch", "per_prompt", "group")}
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ValueError(f"{name} must be one of {valid}; got {getattr(self, name)!r}")
        if num_tasks < 1:
            raise ValueError("give at least one task")
        return local


def check_number(config, name, minimum, integer=False, inclusive=True, maximum=None, label=None):
    """Raise a ValueError naming the setting (`label`, default `name`), its value and the valid range unless
    `config.<name>` is a finite number (or an int) in range."""
    value = getattr(config, name)
    kind = "an int" if integer else "a finite number"
    valid = (isinstance(value, int) and not isinstance(value, bool)) if integer else \
        (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))
    valid = valid and (value >= minimum if inclusive else value > minimum) and (maximum is None or value <= maximum)
    if not valid:
        bounds = f"{'>=' if inclusive else '>'} {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
        raise ValueError(f"{label or name} must be {kind} {bounds}; got {value!r}")


class Trainer:
    """RL fine-tuning of a DiffusionPolicy on tasks, under an accelerate.Accelerator.

    pretrain_data: optional function generator -> (images (B, 3, H, W) in [0, 1], prompts), a batch of the
    pretraining data for the L_pre step. run_info: anything else that defines the run (the command line's
    pipeline, reward and prompts), recorded in config.json with the policy's settings and the tasks.
    eval_prompts: {task name: held-out prompts}, sampled and scored every config.eval_every epochs (`evaluate`).
    """

    def __init__(self, policy, tasks, config, accelerator=None, pretrain_data=None, run_info=None, eval_prompts=None):
        from accelerate import Accelerator
        self.policy, self.tasks, self.cfg = policy, list(tasks), config
        self.acc = accelerator or Accelerator()
        self.local_samples = config.check(self.acc.num_processes, len(self.tasks))
        names = [t.name for t in self.tasks]
        if len(set(names)) < len(names):
            raise ValueError(f"task names must be unique (they prefix the metrics); got {names}")
        for task in self.tasks:
            if config.sample_batch_size % task.group_size:
                raise ValueError(f"task {task.name!r}: group_size={task.group_size} must divide "
                                 f"sample_batch_size={config.sample_batch_size}")
            if config.shared_noise and task.group_size < 2:
                raise ValueError(f"shared_noise=True shares x_T within a group; task {task.name!r} has group_size 1")
            task.check_advantages(task.advantages or config.advantages, config.samples_per_epoch)
            task.check_prompt_lengths(policy.tokenizer)
        if pretrain_data is None and config.pretrain_beta > 0:
            raise ValueError(f"pretrain_beta={config.pretrain_beta} needs pretrain_data")
        self.eval_prompts = _check_eval_prompts(eval_prompts or {}, names, config.eval_every)
        self.pretrain_data = pretrain_data
        self.params = [p for p in policy.unet.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the UNet has no trainable parameters: add LoRA (minirl.sd.add_lora) or "
                             "call unet.requires_grad_(True) for full fine-tuning")
        if config.kl_weight > 0 and not getattr(policy.unet, "peft_config", None):
            raise ValueError(f"kl_weight={config.kl_weight} needs a LoRA UNet: the reference model is the UNet "
                             f"with its adapters disabled (minirl.sd.add_lora)")
        optimizer = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay)
        policy_record = _policy_record(policy)  # before prepare, which may wrap the UNet
        policy.unet, self.optimizer = self.acc.prepare(policy.unet, optimizer)
        self.trackers = {t.name: adv.PerPromptStatTracker() for t in self.tasks}
        self.epoch, self.global_step, self.skipped_steps = 0, 0, 0
        self.n_train = max(1, int(len(policy.trainable_steps) * config.timestep_fraction))
        self.log = runlog.RunLog(Path(config.out), self.acc,
                                 {**(run_info or {}), "policy": policy_record,
                                  "tasks": {t.name: _task_record(t) for t in self.tasks}})

    # -- one epoch ----------------------------------------------------------------------------------------
    def train(self, on_epoch_end=None):
        """Train until cfg.epochs (a new run from epoch 0 replaces a run in its folder), holding the run folder
        meanwhile: another process cannot write it. Returns self."""
        self._agree(self.log.hold)
        try:
            return self._train(on_epoch_end)
        finally:
            self.log.release()

    def _train(self, on_epoch_end):
        if self.epoch == 0:
            # the estimate times one pass of each kind of work: only worth it when someone reads it
            estimate = self._agree(lambda: cost.estimate(self)) if self.cfg.verbose else []
            self.log.start(self.cfg, "\n".join([self.summary(), *estimate]), verbose=self.cfg.verbose)
        with self.log.progress(total=self.cfg.epochs, initial=self.epoch) as bar:  # closed however the loop ends
            while self.epoch < self.cfg.epochs:
                start = time.perf_counter()
                metrics = {}
                for k, task in enumerate(self.tasks):
                    batch, stats = self.sample(task, k)
                    stats.update(self.learn(task, k, batch))
                    metrics.update({self._key(task, name): v for name, v in stats.items()})
                if self.pretrain_data is not None and self.cfg.pretrain_beta > 0:
                    metrics.update(self.pretrain_step())
                self.epoch += 1
                metrics = {"epoch": self.epoch, "global_step": self.global_step, **metrics,
                           **({"skipped_steps": self.skipped_steps} if self.acc.scaler is not None else {}),
                           "epoch_seconds": time.perf_counter() - start}
                if self.cfg.eval_every and (self.epoch % self.cfg.eval_every == 0 or self.epoch == self.cfg.epochs):
                    metrics.update(self.evaluate())
                self.log.metrics(metrics)
                if self.epoch % self.cfg.save_every == 0 or self.epoch == self.cfg.epochs:
                    self.save()
                bar.update(1)
                bar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items() if k.endswith("reward_mean")})
                if on_epoch_end is not None:
                    on_epoch_end(self, metrics)
        if self.acc.is_main_process:
            runlog.plot_reward_curves(self.cfg.out)
        return self

    @torch.no_grad()
    def sample(self, task, k):
        """Roll out this process's share of the task's samples, score them, and compute advantages over the
        global batch. Returns (batch of tensors for training, reward statistics)."""
        cfg, acc = self.cfg, self.acc
        first = acc.process_index * self.local_samples
        chains, rewards, prompts, infos = self._agree(lambda: self.rollouts(task, k, first))
        local = torch.cat(rewards).to(acc.device)
        global_rewards = acc.gather(local).cpu()
        mode = task.advantages or cfg.advantages
        if mode == "batch":
            advantages = adv.normalize(global_rewards)
        elif mode == "per_prompt":
            from accelerate.utils import gather_object
            all_prompts = gather_object(prompts) if acc.num_processes > 1 else prompts
            advantages = self.trackers[task.name].update(all_prompts, global_rewards)
        else:
            groups = torch.arange(len(global_rewards)) // task.group_size
            advantages = adv.group_relative(global_rewards, groups)
        mine = slice(acc.process_index * self.local_samples, (acc.process_index + 1) * self.local_samples)
        batch = {
            "latents": torch.cat([c.latents for c in chains]),              # (N, T+1, C, H, W)
            "log_probs": torch.cat([c.log_probs for c in chains]),          # (N, T)
            "embeds": torch.cat([c.prompt_embeds for c in chains]),         # (N, L, D)
            "advantages": adv.clip(advantages[mine], cfg.adv_clip).to(acc.device),  # (N,)
            "timesteps": chains[0].timesteps,                               # (T,)
            "first": first,
        }
        stats = {"reward_mean": global_rewards.mean().item(), "reward_std": global_rewards.std(unbiased=False).item()}
        stats.update(self._mean_over_processes(_mean(infos)))  # the reward's own info, over all batches
        return batch, stats

    def rollouts(self, task, k, first):
        """This process's chains, rewards (validated), prompts and reward infos, batch by batch."""
        cfg, policy = self.cfg, self.policy
        chains, rewards, prompts, infos = [], [], [], []
        for b in range(first, first + self.local_samples, cfg.sample_batch_size):
            indices = range(b, b + cfg.sample_batch_size)
            batch_prompts, metadata = task.draw(cfg.seed, self.epoch, k, indices)
            generators = [torch.Generator().manual_seed(seed_for(cfg.seed, self.epoch, k, i, "noise"))
                          for i in indices]
            traj = policy.rollout(batch_prompts, generators, self.shared_x_T(task, k, indices) if cfg.shared_noise
                                  else None)
            _check_finite(traj.log_probs, "sampled log_probs", self.epoch, task.name)
            images = policy.decode(traj.latents[:, -1])
            r, info = self.reward(task, images, batch_prompts, metadata)
            chains.append(traj)
            rewards.append(r)
            prompts += batch_prompts
            infos.append(info)
            if b == first and self.log.want_images(self.epoch + 1, cfg.image_every):
                self.log.images(images, batch_prompts, r, f"{task.name}_epoch{self.epoch + 1:04d}", self.epoch + 1)
        return chains, rewards, prompts, infos

    def shared_x_T(self, task, k, indices):
        """One starting noise a group (sample i is in group i // group_size), drawn once from the group's seed."""
        groups = [i // task.group_size for i in indices]
        noise = {g: torch.randn(self.policy.latent_shape, generator=torch.Generator().manual_seed(
            seed_for(self.cfg.seed, self.epoch, k, g, "x_T"))) for g in dict.fromkeys(groups)}
        return torch.stack([noise[g] for g in groups])

    def reward(self, task, images, prompts, metadata):
        if not task.distribution:
            return validate(task.name, self._score(task, images, prompts, metadata), len(images))
        rewards, infos = [], []
        for g in range(0, len(images), task.group_size):
            part = slice(g, g + task.group_size)
            r, info = validate(task.name, self._score(task, images[part], prompts[part], metadata[part]),
                               task.group_size)
            rewards.append(r)
            infos.append(info)
        return torch.cat(rewards), _mean(infos)

    def _score(self, task, images, prompts, metadata):
        """The task's reward; a ValueError from inside it (a check of its own) names the reward."""
        try:
            return task.reward(images, prompts, metadata)
        except ValueError as e:
            raise ValueError(f"reward {task.name!r} failed: {e}") from e

    def learn(self, task, k, batch):
        """PPO (or REINFORCE) updates over the sampled chains; returns the epoch's metrics for this task."""
        cfg, acc = self.cfg, self.acc
        infos = []
        for inner in range(cfg.inner_epochs):
            for rows in self.minibatches(k, inner):
                infos.append(self.update(task, batch, rows, inner, k))
        metrics = self._mean_over_processes(_mean(infos))
        first = torch.tensor([infos[0]["max_abs_log_ratio"]], device=acc.device)
        metrics["max_abs_log_ratio_first_update"] = float(acc.gather(first).max())
        return metrics

    def minibatches(self, k, inner):
        """This process's rows (local sample indices) of each optimizer step of an inner epoch: its samples in an
        order seeded by (seed, epoch, task, inner epoch, process), cut into train batches."""
        n, size = self.local_samples, self.cfg.train_batch_size
        order = torch.randperm(n, generator=_gen(self.cfg.seed, self.epoch, k, inner, "shuffle", self.acc.process_index))
        return [order[start:start + size] for start in range(0, n, size)]

    def update(self, task, batch, rows, inner, k):
        """One optimizer step on the transitions (sample i, its j-th chosen timestep) of these rows."""
        cfg, acc, policy = self.cfg, self.acc, self.policy
        trainable = policy.trainable_steps
        steps = torch.stack([trainable[torch.randperm(len(trainable), generator=_gen(
            cfg.seed, self.epoch, k, inner, "timesteps", batch["first"] + int(i)))[:self.n_train]] for i in rows])
        pairs = [(int(rows[r]), int(steps[r, j])) for j in range(self.n_train) for r in range(len(rows))]
        micro = cfg.train_micro_batch or cfg.train_batch_size
        chunks = [pairs[s:s + micro] for s in range(0, len(pairs), micro)]
        infos, max_abs_log_ratio = [], 0.0
        for c, chunk in enumerate(chunks):
            i = torch.tensor([p[0] for p in chunk], device=acc.device)
            j = torch.tensor([p[1] for p in chunk], device=acc.device)
            x_t, x_prev = batch["latents"][i, j], batch["latents"][i, j + 1]
            t = batch["timesteps"].to(acc.device)[j]
            sync = c == len(chunks) - 1
            with acc.autocast(), (nullcontext() if sync else acc.no_sync(policy.unet)):
                log_prob, (mean, sigma) = policy.log_prob(x_t, x_prev, t, batch["embeds"][i])
                old = batch["log_probs"][i, j]
                if cfg.loss == "ppo":
                    loss, info = ppo_loss(log_prob, old, batch["advantages"][i], cfg.clip_range)
                else:
                    loss, info = reinforce_loss(log_prob, batch["advantages"][i])
                if cfg.kl_weight > 0:
                    kl, kl_info = kl_to_reference(mean, self.reference_mean(x_t, t, batch["embeds"][i]), sigma)
                    loss = loss + cfg.kl_weight * kl
                    info.update(kl_info)
                self._agree(lambda: (_check_finite(log_prob, "recomputed log_prob", self.epoch, task.name, t),
                                     _check_finite(loss, "loss", self.epoch, task.name, t)))
                acc.backward(task.weight * loss * len(chunk) / len(pairs))
            infos.append(info)
            max_abs_log_ratio = max(max_abs_log_ratio, float((log_prob.detach() - old).abs().max()))
        info = _mean(infos)
        info.update(max_abs_log_ratio=max_abs_log_ratio, grad_norm=float(self.step(task.name)))
        return info

    @torch.no_grad()
    def reference_mean(self, x_t, t, embeds):
        """The step mean of the pretrained model: the same UNet with its LoRA adapters switched off."""
        unet = self.acc.unwrap_model(self.policy.unet)
        unet.disable_adapters()
        try:
            return self.policy.transition(x_t, t, embeds)[0]
        finally:
            unet.enable_adapters()

    def step(self, where):
        """Clip, check and apply the accumulated gradient; returns its norm before clipping. Under fp16's loss
        scaler an inf norm is an overflow the scaler handles (it skips the step and lowers the scale), counted
        in `skipped_steps`; otherwise a non-finite norm stops the run."""
        grad_norm = self.acc.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        if self.acc.scaler is None:
            _check_finite(grad_norm, "gradient norm", self.epoch, where)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped_steps += int(self.acc.optimizer_step_was_skipped)
        self.global_step += 1
        return grad_norm

    def pretrain_step(self):
        """Algorithm 1's last line: one gradient step on beta * L_pre with a batch of pretraining data."""
        policy = self.policy
        generator = _gen(self.cfg.seed, self.epoch, "pretrain", self.acc.process_index)
        images, prompts = self.pretrain_data(generator)
        if self.cfg.pretrain_uncond_fraction > 0:  # caption dropout, as SD's training: L_pre anchors eps_u too
            drop = torch.rand(len(prompts), generator=generator) < self.cfg.pretrain_uncond_fraction
            prompts = ["" if d else p for p, d in zip(prompts, drop.tolist())]
        with self.acc.autocast():
            x0, embeds = policy.encode_images(images), policy.encode_prompts(prompts)
            pred, target = policy.denoising_prediction(x0, embeds, generator)
            loss, info = denoising_loss(pred, target)
            self._agree(lambda: _check_finite(loss, "L_pre", self.epoch, "pretrain"))
            self.acc.backward(self.cfg.pretrain_beta * loss)
        info["pretrain_grad_norm"] = self.step("pretrain")
        return self._mean_over_processes(_mean([info]))

    @torch.no_grad()
    def evaluate(self):
        """Sample each task's held-out prompts (eval_prompts), group_size images a prompt, each from a seed of
        (seed, task, sample) that every evaluation reuses, so evaluations differ by the weights alone; score them
        with the task's reward and write a grid of them to eval/. The processes share the prompts. Returns the
        metrics: eval_reward_mean, eval_reward_std and the reward's info as eval_*, under the task's prefix."""
        from accelerate.utils import gather_object
        start, metrics = time.perf_counter(), {}
        for k, task in enumerate(self.tasks):
            prompts = self.eval_prompts.get(task.name)
            if prompts:
                samples, infos = self._agree(lambda: self._eval_rollouts(task, k, prompts))
                if self.acc.num_processes > 1:
                    samples, infos = gather_object(samples), gather_object(infos)
                _, images, texts, rewards = zip(*sorted(samples, key=lambda sample: sample[0]))
                rewards = torch.tensor(rewards)
                stats = {"reward_mean": rewards.mean().item(), "reward_std": rewards.std(unbiased=False).item(),
                         **_mean(infos)}
                metrics.update({self._key(task, f"eval_{name}"): v for name, v in stats.items()})
                if self.acc.is_main_process:
                    self.log.images(torch.stack(images), texts, rewards, f"{task.name}_epoch{self.epoch:04d}",
                                    self.epoch, folder="eval")
        return {**metrics, "eval_seconds": time.perf_counter() - start}

    def _eval_rollouts(self, task, k, prompts):
        """This process's evaluation samples, [(index, image, prompt, reward)], and the reward's infos: every P-th
        prompt, in sample batches of whole groups."""
        cfg, acc = self.cfg, self.acc
        mine = [(g * task.group_size + j, g) for g in range(acc.process_index, len(prompts), acc.num_processes)
                for j in range(task.group_size)]
        samples, infos = [], []
        for b in range(0, len(mine), cfg.sample_batch_size):
            indices, groups = zip(*mine[b:b + cfg.sample_batch_size])
            texts = [prompts[g] for g in groups]
            trajectory = self.policy.rollout(texts, [_gen(cfg.seed, "eval", k, i) for i in indices])
            images = self.policy.decode(trajectory.latents[:, -1])
            rewards, info = self.reward(task, images, texts, [{**task.metadata, "group": g} for g in groups])
            samples += zip(indices, images.cpu(), texts, rewards.tolist())
            infos.append({name: float(v) for name, v in info.items()})
        return samples, infos

    # -- several processes ---------------------------------------------------------------------------------
    def _agree(self, fn):
        """fn() on every process; if it raises on any, raise on all (the failing process's own error, a
        RuntimeError naming it elsewhere), so that no process waits forever in the next collective."""
        try:
            out, error = fn(), None
        except Exception as e:  # noqa: BLE001 -- re-raised below, on every process
            out, error = None, e
        if self.acc.num_processes > 1:
            from accelerate.utils import gather_object
            failed = [m for m in gather_object([f"{type(error).__name__}: {error}" if error else ""]) if m]
            if failed and error is None:
                raise RuntimeError(f"another process failed, so this one stops too: {failed[0]}")
        if error is not None:
            raise error
        return out

    def _mean_over_processes(self, metrics):
        """Each metric averaged over the processes (each saw its own share of the samples)."""
        if self.acc.num_processes == 1 or not metrics:
            return metrics
        values = self.acc.reduce(torch.tensor([float(v) for v in metrics.values()], device=self.acc.device), "mean")
        return dict(zip(metrics, values.tolist()))

    # -- reporting and checkpoints ------------------------------------------------------------------------
    def _key(self, task, name):
        return name if len(self.tasks) == 1 else f"{task.name}/{name}"

    def summary(self):
        """The run's batch arithmetic, sampler and precision, in words (printed at the start, in config.json)."""
        cfg, p, acc = self.cfg, self.policy, self.acc
        T, left_out = p.num_steps, int(((p.sigmas < p.min_sigma) | (p.sigmas <= 0)).sum())
        per_update = cfg.train_batch_size * self.n_train
        micro = cfg.train_micro_batch or cfg.train_batch_size
        passes = math.ceil(per_update / micro)
        updates = cfg.inner_epochs * self.local_samples // cfg.train_batch_size
        cfg_x = 2 if p.do_cfg else 1
        net = "transformer" if p.sd3 else "UNet"
        noise = "".join(f", {name.replace('_', ' ')} {v}" for name, v in sampler(p).items() if v is not None)
        frozen = {str(q.dtype).removeprefix("torch.") for q in p.unet.parameters() if not q.requires_grad}
        lines = [
            f"{acc.num_processes} process(es) on {acc.device}; tasks {[t.name for t in self.tasks]}; mixed precision "
            f"{acc.mixed_precision}, trained weights in {str(self.params[0].dtype).removeprefix('torch.')}"
            + (f", frozen {net} weights in {', '.join(sorted(frozen))}" if frozen else ""),
            f"sampling, per task and epoch: {cfg.samples_per_epoch} samples = {acc.num_processes} process(es) x "
            f"{self.local_samples // cfg.sample_batch_size} batches x {cfg.sample_batch_size}, {T} steps "
            f"({type(p.scheduler).__name__}{noise}, guidance {p.guidance_scale}): "
            f"{T * self.local_samples // cfg.sample_batch_size} {net} passes at batch {cfg_x * cfg.sample_batch_size} "
            f"per process",
            f"training: {self.n_train} of {len(p.trainable_steps)} trainable timesteps a chain "
            f"({left_out} left out: sigma_t below min_sigma={p.min_sigma} or zero), {updates} optimizer steps a task "
            f"and epoch ({cfg.inner_epochs} inner epoch(s) x {self.local_samples // cfg.train_batch_size} batches "
            f"of {cfg.train_batch_size}), each over {per_update} transitions in {passes} {net} passes at batch "
            f"{cfg_x * micro}" + (f", and {passes} more without gradients for the KL term's reference (adapters off)"
                                 if cfg.kl_weight > 0 else ""),
        ]
        return "\n".join(lines)

    def state_dict(self):
        unet = self.acc.unwrap_model(self.policy.unet)
        return {"trainable": {n: p for n, p in unet.named_parameters() if p.requires_grad},
                "optimizer": self.optimizer.state_dict(), "rng": checkpoint.rng_state(),
                "trackers": {k: t.state_dict() for k, t in self.trackers.items()},
                "epoch": self.epoch, "global_step": self.global_step, "skipped_steps": self.skipped_steps,
                "config": asdict(self.cfg), "run": self.log.run_info,
                "scaler": self.acc.scaler.state_dict() if self.acc.scaler is not None else None}

    def save(self):
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            root = Path(self.cfg.out) / "checkpoints"
            checkpoint.save_state(self.state_dict(), root, f"epoch_{self.epoch:04d}")
            checkpoint.prune(root, self.cfg.keep_checkpoints)
        self.acc.wait_for_everyone()

    def resume(self, folder=None):
        """Continue from a checkpoint folder (default: the run folder's newest complete one, saying so when that is
        not the one `latest` names), holding the run folder until train() ends. Returns self."""
        self._agree(self.log.hold)
        try:
            return self._resume(folder)
        except BaseException:
            self.log.release()
            raise

    def _resume(self, folder):
        if folder is None:
            root = Path(self.cfg.out) / "checkpoints"
            try:
                folder, state, notes = checkpoint.load_newest(root, _check_state)
            except FileNotFoundError:
                raise FileNotFoundError(f"no checkpoint to resume under {root}") from None
            except checkpoint.DamagedCheckpoint as e:
                raise checkpoint.DamagedCheckpoint(f"{e}; start the run again with --overwrite, or restore a "
                                                   f"checkpoint") from None
            if notes and self.acc.is_main_process:
                print(f"{'; '.join(notes)}; resuming from {folder.name}, the newest complete checkpoint", flush=True)
        else:
            state = checkpoint.load_state(folder, _check_state)
        now = json.loads(json.dumps({**self.log.run_info, **asdict(self.cfg)}))  # as read back: tuples are lists
        changed = _differences({**state["run"], **state["config"]}, now)
        if changed:
            raise ValueError(f"cannot resume {folder}: the run it continues was defined differently ("
                             f"{'; '.join(changed)}); only {', '.join(sorted(RESUMABLE_CHANGES))} may change")
        params = checkpoint.trainable_params(self.acc.unwrap_model(self.policy.unet), state["trainable"], folder,
                                             "was it made with the same LoRA rank / model?")
        self.log.resumed(state["epoch"])  # the metrics checked before the model changes
        with torch.no_grad():
            for name, value in state["trainable"].items():
                params[name].copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])
        checkpoint.set_rng_state(state["rng"])
        for name, tracker_state in state["trackers"].items():
            self.trackers[name].load_state_dict(tracker_state)
        if state.get("scaler") is not None and self.acc.scaler is not None:
            self.acc.scaler.load_state_dict(state["scaler"])
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        self.skipped_steps = state.get("skipped_steps", 0)
        return self


def _policy_record(policy):
    """What defines the policy, for config.json (a run started from Python records it too), the resume check and
    `minirl sample` / `minirl export`: its denoiser (class, the folder it was loaded from, its LoRA), its scheduler
    and the sampler's settings (`sampler`)."""
    unet, loaded_from = policy.unet, policy.unet.config.get("_name_or_path")
    if loaded_from and Path(loaded_from).exists():
        loaded_from = str(Path(loaded_from).resolve())  # a local folder, however its path was written
    lora = getattr(unet, "peft_config", {}).get("default")
    if lora is not None:
        targets = lora.target_modules  # module names (a set) or a regular expression
        lora = {"rank": lora.r, "alpha": lora.lora_alpha,
                "target_modules": targets if isinstance(targets, str) else sorted(targets)}
    return {"denoiser": type(unet).__name__, "loaded_from": loaded_from, "lora": lora,
            "scheduler": type(policy.scheduler).__name__, "latent_size": policy.latent_shape[-1],
            "steps": policy.num_steps, "guidance_scale": policy.guidance_scale, "min_sigma": policy.min_sigma,
            **sampler(policy)}


def sampler(policy):
    """The sampler's own noise setting: DDIM's eta, or the flow SDE's noise level (and MixGRPO's window); DDPM's
    ancestral step has none (its variance is fixed)."""
    if policy.flow:
        return {"noise_level": policy.noise_level, "sde_window": list(policy.sde_window or []) or None}
    return {"eta": policy.eta} if isinstance(policy.scheduler, DDIMScheduler) else {}


def _check_eval_prompts(eval_prompts, names, eval_every):
    """{task: [prompt, ...]} checked: tasks of this run, lists of non-empty strings, given with eval_every > 0."""
    if bool(eval_prompts) != (eval_every > 0):
        raise ValueError(f"evaluation needs both eval_every > 0 and eval_prompts; got eval_every={eval_every} and "
                         f"eval_prompts for {sorted(eval_prompts) or 'no task'}")
    for task, prompts in eval_prompts.items():
        if task not in names:
            raise ValueError(f"eval_prompts names task {task!r}, which is not one of this run's {names}")
        if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise ValueError(f"eval_prompts[{task!r}] must be a list of non-empty prompts; got {prompts!r}")
    return {task: list(prompts) for task, prompts in eval_prompts.items()}


def _task_record(task):
    """What defines a task beside its reward, for config.json and the resume check: its prompts (parsed, so an
    edited prompts file shows; None for a prompt function), group size, advantages and weight."""
    return {"prompts": None if callable(task.prompts) else list(task.prompts), "group_size": task.group_size,
            "advantages": task.advantages, "weight": task.weight}


def _differences(then, now):
    """Each difference, in words, between the run a checkpoint continues and this one (RESUMABLE_CHANGES aside)."""
    changed = []
    for key in sorted((set(then) | set(now)) - RESUMABLE_CHANGES):
        a, b = then.get(key), now.get(key)
        if a == b:
            continue
        if key == "tasks" and isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
            changed += [_task_difference(name, field, a[name][field], b[name].get(field))
                        for name in a for field in a[name] if a[name][field] != b[name].get(field)]
        elif key == "policy" and isinstance(a, dict) and isinstance(b, dict):
            changed += [f"the policy's {field}: {a.get(field)!r} in the checkpoint, {b.get(field)!r} now"
                        for field in sorted(a.keys() | b.keys()) if a.get(field) != b.get(field)]
        else:
            changed.append(f"{key}: {a!r} in the checkpoint, {b!r} now")
    return changed


def _task_difference(task, field, a, b):
    if field == "prompts" and isinstance(a, list) and isinstance(b, list):  # long lists: the first difference
        i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        at = lambda prompts: repr(prompts[i]) if i < len(prompts) else "none"  # noqa: E731
        return (f"the prompts of task {task!r}: {len(a)} in the checkpoint, {len(b)} now, the first difference at "
                f"#{i}: {at(a)} in the checkpoint, {at(b)} now")
    return f"the {field} of task {task!r}: {a!r} in the checkpoint, {b!r} now"


STATE_FIELDS = {"trainable": dict, "optimizer": dict, "rng": dict, "trackers": dict, "config": dict, "run": dict,
                "epoch": int, "global_step": int}  # what resume reads from a checkpoint


def _check_state(state):
    """Raise DamagedCheckpoint naming the first field of a trainer's checkpoint that is missing or of the wrong type
    (state.json edited by hand, or written by something else)."""
    if not isinstance(state, dict):
        raise checkpoint.DamagedCheckpoint(f"state.json holds a {type(state).__name__}, not a trainer's state")
    for key, kind in STATE_FIELDS.items():
        value = state.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            found = "missing" if key not in state else f"a {type(value).__name__}"
            raise checkpoint.DamagedCheckpoint(f"state.json: {key!r} is {found}, expected "
                                               f"{'an int' if kind is int else 'a dict'}")
    if not all(isinstance(v, torch.Tensor) for v in [*state["trainable"].values(), state["rng"].get("torch")]):
        raise checkpoint.DamagedCheckpoint("state.json: a trainable weight or the RNG state is not a tensor")


def _check_finite(x, what, epoch, task, timesteps=None):
    """Stop the run, naming where, if a tensor holds NaN or inf."""
    x = torch.as_tensor(x)
    if not bool(torch.isfinite(x).all()):
        where = f" at timesteps {torch.as_tensor(timesteps).tolist()}" if timesteps is not None else ""
        raise FloatingPointError(f"{what} is not finite (epoch {epoch}, task {task!r}{where}, dtype {x.dtype}): "
                                 f"{x.flatten()[:8].tolist()}. Common causes: a step with sigma_t ~ 0 "
                                 f"(min_sigma), fp16 overflow (use bf16 or fp32), a learning rate too high.")


def _mean(infos):
    """Average a list of info dicts key by key (numbers or 0-d tensors)."""
    return {name: sum(float(i[name]) for i in infos) / len(infos) for name in infos[0]}


def _gen(*parts):
    return torch.Generator().manual_seed(seed_for(*parts))


def _divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]

