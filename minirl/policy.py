"""A text-conditional diffusion or flow model as an RL policy: pi_theta(x_{t-1} | x_t, c).

The same class serves Stable Diffusion 1.x/2.x (latent space, through a VAE), the tiny world (pixel space, no
VAE) and Stable Diffusion 3 (flow matching): a denoiser, a scheduler, text encoder(s) and tokenizer(s).
The scheduler's type picks the MDP step (minirl.mdp): DDIM or DDPM with `eta`, or Flow-GRPO's SDE with
`noise_level` for a FlowMatchEulerDiscreteScheduler. The denoiser's type picks the two calls that differ
(`denoise` and `encode_prompts`): a UNet2DConditionModel takes (x_t, t, text embeddings); SD3's
SD3Transformer2DModel also takes a pooled text vector, and its prompts go through its pipeline's
encode_prompt (two CLIP encoders and an optional T5).
Classifier-free guidance is part of the policy: the action's mean comes from the guided model output
out_u + w (out_c - out_u) (noise or velocity), at sampling and at training time alike, so the log-probabilities
recomputed for PPO equal those stored at sampling (ratio 1 at the first update).
"""

import copy
from dataclasses import dataclass

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
from diffusers.utils.torch_utils import randn_tensor

from minirl.mdp import flow_ode_step, gaussian_log_prob, mean_and_sigma, step_sigmas, step_with_logprob


@dataclass
class Trajectory:
    """A batch of denoising chains rolled out by the policy."""
    latents: torch.Tensor        # (B, T+1, C, H, W) x_T ... x_0, fp32
    log_probs: torch.Tensor      # (B, T) log p(x_{t-1} | x_t, c) when sampled
    timesteps: torch.Tensor      # (T,) the scheduler's timesteps, x_T's first
    prompt_embeds: torch.Tensor  # (B, L, D); SD3: (B, L + 1, W), the pooled vector as the last row
    prompts: list


class DiffusionPolicy:
    """Denoiser + scheduler + text encoder + tokenizer (+ optional VAE), with classifier-free guidance.

    unet: the denoiser the policy trains, a UNet2DConditionModel or an SD3Transformer2DModel (the attribute
    keeps the UNet's name, which the trainer uses). text_encoder: its device is the policy's.
    eta: DDIM's noise, in (0, 1]; noise_level: the flow SDE's (Flow-GRPO: 0.7); the scheduler uses its own.
    prompt_encoder: prompts -> (embeddings (B, L, D), pooled (B, P)), needed by SD3 (sd.policy_from_pipeline
    passes its pipeline's encode_prompt); without it, the tokenizer and the text encoder's last hidden state.
    min_sigma: steps whose sigma_t (a flow step's std) is below it are sampled as usual but never trained on.
    With 20 DDIM steps of Stable Diffusion's schedule the last two have sigma_t 0.041 and 0.021 (0.167 one
    step earlier); a weight change moves their log-probability 1/sigma_t times faster, and a step with
    sigma_t = 0 (steps_offset=0, or DDPM's last step: sigma_t below mdp.SIGMA_MIN counts as 0) has no
    log-probability. SD3's 10 flow steps (shift 3, noise_level 0.7) have std 0.70, 0.74, 0.54, ..., 0.23 and
    0.006 at the last step, so 0.05 leaves out the last step only, as Flow-GRPO does (it trains 9 of 10).
    sde_window: flow only, (start, stop) step indices: the SDE's exploration noise on steps start .. stop - 1
    only, the ODE's deterministic Euler step elsewhere (MixGRPO's window; (0, 3) explores where layouts are
    decided). Only the window's steps are actions, so only they are trained. None: the SDE on every step.
    latent_size: the side of the latent the chains run in (default: the denoiser's config.sample_size; the image
    is the VAE's factor larger, sd.policy_from_pipeline's `resolution`).
    """

    def __init__(self, unet, scheduler, text_encoder, tokenizer, vae=None, *, num_steps=20, eta=1.0,
                 noise_level=0.7, guidance_scale=5.0, min_sigma=0.05, prompt_encoder=None, sde_window=None,
                 latent_size=None):
        if not (isinstance(num_steps, int) and num_steps >= 1):
            raise ValueError(f"num_steps must be an int >= 1; got {num_steps!r}")
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0 (1 or less turns guidance off); got {guidance_scale}")
        scheduler = copy.deepcopy(scheduler)  # the policy owns its schedule: set_timesteps elsewhere cannot move it
        self.unet, self.scheduler, self.text_encoder, self.tokenizer, self.vae = \
            unet, scheduler, text_encoder, tokenizer, vae
        self.eta, self.noise_level, self.guidance_scale, self.min_sigma = eta, noise_level, guidance_scale, min_sigma
        self.flow = isinstance(scheduler, FlowMatchEulerDiscreteScheduler)
        self.sd3 = isinstance(unet, SD3Transformer2DModel)  # kept, as below: a DDP wrapper hides type and config
        if self.sd3 and prompt_encoder is None:
            raise ValueError("an SD3 transformer needs prompt_encoder (its pipeline's encode_prompt, with the pooled "
                             "text vector): build the policy with minirl.sd.policy_from_pipeline(pipe)")
        self.prompt_encoder = prompt_encoder
        self.text_widths = (unet.config.joint_attention_dim, unet.config.pooled_projection_dim) if self.sd3 else None
        scheduler.set_timesteps(num_steps)
        self.sigmas = step_sigmas(scheduler, eta, noise_level)              # (T,)
        self.sde_window = sde_window
        if sde_window is not None:
            pair = isinstance(sde_window, (tuple, list)) and len(sde_window) == 2 and \
                all(isinstance(i, int) for i in sde_window)
            if not (self.flow and pair and 0 <= sde_window[0] < sde_window[1] <= num_steps):
                raise ValueError(f"sde_window must be (start, stop) step indices with 0 <= start < stop <= num_steps="
                                 f"{num_steps}, for a flow-matching scheduler; got {sde_window!r} with "
                                 f"{type(scheduler).__name__}")
            self.sde_window = start, stop = tuple(sde_window)
            self.sigmas[:start], self.sigmas[stop:] = 0, 0                # the ODE's steps: no noise, no action
        self.trainable_steps = torch.nonzero((self.sigmas >= min_sigma) & (self.sigmas > 0)).flatten()
        if len(self.trainable_steps) == 0:
            raise ValueError(f"no step has sigma_t >= min_sigma={min_sigma} (largest {self.sigmas.max():.4f}); "
                             f"lower min_sigma or raise {'noise_level' if self.flow else 'eta'}")
        size = unet.config.sample_size if latent_size is None else latent_size
        if not (isinstance(size, int) and size >= 1):
            raise ValueError(f"latent_size must be an int >= 1; got {size!r}")
        self.latent_shape = (unet.config.in_channels, size, size)            # kept: a DDP wrapper hides config
        self._uncond_embeds = None

    @property
    def num_steps(self):
        return len(self.scheduler.timesteps)

    @property
    def device(self):
        return self.text_encoder.device

    @property
    def do_cfg(self):
        return self.guidance_scale > 1.0

    @torch.no_grad()
    def encode_prompts(self, prompts):
        """The prompts' embeddings, (B, L, D); SD3's with the pooled vector packed in (pack_prompt)."""
        if self.prompt_encoder is not None:
            return pack_prompt(*self.prompt_encoder(list(prompts)))
        ids = self.tokenizer(list(prompts), padding="max_length", truncation=True, return_tensors="pt",
                             max_length=self.tokenizer.model_max_length).input_ids
        return self.text_encoder(ids.to(self.device))[0]                     # (B, L, D)

    def uncond_embeds(self):
        if self._uncond_embeds is None:  # the text encoder is frozen, so "" is encoded once
            self._uncond_embeds = self.encode_prompts([""])                 # (1, L, D)
        return self._uncond_embeds

    def denoise(self, x_t, t, prompt_embeds):
        """One call of the denoiser, unguided: the UNet's prediction (noise, v or x0) or SD3's velocity v."""
        if self.sd3:
            embeds, pooled = unpack_prompt(prompt_embeds, *self.text_widths)
            return self.unet(hidden_states=x_t, timestep=t, encoder_hidden_states=embeds,
                             pooled_projections=pooled).sample
        return self.unet(x_t, t, encoder_hidden_states=prompt_embeds).sample

    def predict_noise(self, x_t, t, prompt_embeds):
        """The (guided) model output at (x_t, t, c); x_t (B, C, H, W), t a number or (B,), embeds (B, L, D)."""
        t = torch.as_tensor(t, device=x_t.device).expand(len(x_t))
        dtype = prompt_embeds.dtype
        if not self.do_cfg:
            return self.denoise(x_t.to(dtype), t, prompt_embeds).float()
        uncond = self.uncond_embeds().expand(len(x_t), -1, -1).to(dtype)
        out = self.denoise(torch.cat([x_t, x_t]).to(dtype), torch.cat([t, t]),
                           torch.cat([uncond, prompt_embeds])).float()
        out_u, out_c = out.chunk(2)
        return out_u + self.guidance_scale * (out_c - out_u)

    def step(self, x_t, t, prompt_embeds, prev_sample=None, generator=None):
        """One policy step: returns (x_{t-1}, log_prob (B,)); with prev_sample given, its log-probability."""
        model_output = self.predict_noise(x_t, t, prompt_embeds)
        if not self.in_sde_window(t):
            if prev_sample is not None:
                raise ValueError(f"timestep {float(t)} is outside sde_window={self.sde_window}: an ODE step has "
                                 f"no log-probability")
            return flow_ode_step(self.scheduler, model_output, t, x_t), torch.zeros(len(x_t), device=x_t.device)
        return step_with_logprob(self.scheduler, model_output, t, x_t, eta=self.eta, noise_level=self.noise_level,
                                 prev_sample=prev_sample, generator=generator)

    def in_sde_window(self, t):
        """Whether the step at timestep t (a value of the schedule) is inside sde_window (always, without one)."""
        if self.sde_window is None:
            return True
        index = int(torch.nonzero(self.scheduler.timesteps == torch.as_tensor(t).to(self.scheduler.timesteps))[0])
        return self.sde_window[0] <= index < self.sde_window[1]

    @torch.no_grad()
    def rollout(self, prompts, generator=None, x_T=None):
        """Sample one batch of trajectories. generator: one torch.Generator, or a list with one per sample
        (then each chain depends only on its own seed, whatever the batch size or process count). x_T: the
        starting noise (B, *latent_shape); default drawn from generator."""
        prompt_embeds = self.encode_prompts(prompts)
        shape = (len(prompts), *self.latent_shape)
        if x_T is None:
            x = randn_tensor(shape, generator=generator, device=self.device, dtype=torch.float32)
        elif tuple(x_T.shape) != shape:
            raise ValueError(f"x_T must have shape {shape} (one starting noise a prompt); got {tuple(x_T.shape)}")
        else:
            x = x_T.to(self.device, torch.float32)
        latents, log_probs = [x], []
        for t in self.scheduler.timesteps:
            x, log_prob = self.step(x, t, prompt_embeds, generator=generator)
            latents.append(x)
            log_probs.append(log_prob)
        return Trajectory(torch.stack(latents, 1), torch.stack(log_probs, 1), self.scheduler.timesteps.clone(),
                          prompt_embeds, list(prompts))

    @torch.no_grad()
    def finish(self, x, k, prompt_embeds, generator=None):
        """Run chains on from their states x before DDIM step k (k = 0: x is x_T) to the end; returns the final
        latents. With fresh noise, shows which steps decide an outcome (minirl/tinyworld/decided.py)."""
        if not 0 <= k <= self.num_steps:
            raise ValueError(f"k must be a step index in [0, {self.num_steps}]; got {k}")
        for t in self.scheduler.timesteps[k:]:
            x, _ = self.step(x, t, prompt_embeds, generator=generator)
        return x

    def transition(self, x_t, t, prompt_embeds):
        """The action distribution pi_theta(. | x_t, c) = N(mean, sigma_t^2): (mean (B, C, H, W), sigma (B,))."""
        return mean_and_sigma(self.scheduler, self.predict_noise(x_t, t, prompt_embeds), t, x_t, self.eta,
                              self.noise_level)

    def log_prob(self, x_t, x_prev, t, prompt_embeds):
        """log p_theta(x_prev | x_t, c) of stored transitions under the current weights, (B,), with grad;
        also returns the step's (mean, sigma) for a KL term. Only for steps with sigma_t > 0."""
        mean, sigma = self.transition(x_t, t, prompt_embeds)
        return gaussian_log_prob(x_prev.float(), mean, sigma), (mean, sigma)

    @torch.no_grad()
    def decode(self, latents):
        """Final latents (B, C, h, w) -> images (B, 3, H, W) in [0, 1]; latents = (z - shift) * scale (SD3 shifts)."""
        if self.vae is not None:
            scale, shift = self.vae.config.scaling_factor, self.vae.config.shift_factor or 0.0
            latents = self.vae.decode(latents.to(self.vae.dtype) / scale + shift).sample
        return (latents.float() / 2 + 0.5).clamp(0, 1)

    @torch.no_grad()
    def encode_images(self, images):
        """Images (B, 3, H, W) in [0, 1] -> x_0 in the space the denoiser works in (latents or pixels)."""
        x = images.to(self.device) * 2 - 1
        if self.vae is None:
            return x
        scale, shift = self.vae.config.scaling_factor, self.vae.config.shift_factor or 0.0
        return (self.vae.encode(x.to(self.vae.dtype)).latent_dist.sample() - shift) * scale

    def training_timesteps(self, n, generator=None):
        """n timesteps (n,) for the denoising loss: uniform in [0, T) for diffusion; for flow matching
        sigma = sigmoid(u), u ~ N(0, 1) (SD3's logit-normal sampling, Esser et al. 2024, Sec. 3.1), shifted by the
        scheduler's shift as diffusers' SD3 training scripts do, as sigma * T (the transformer's input)."""
        T = self.scheduler.config.num_train_timesteps
        if not self.flow:
            return torch.randint(0, T, (n,), generator=generator)
        u, shift = torch.sigmoid(torch.randn(n, generator=generator)), self.scheduler.config.shift
        return T * shift * u / (1 + (shift - 1) * u)

    def denoising_prediction(self, x0, prompt_embeds, generator=None, timesteps=None):
        """For L_pre (paper Eq. 9): noise x0 at timesteps (B,), return (model prediction, its target).

        Diffusion: x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise; the target is what the UNet
        predicts (noise, v or x0). Flow matching: x_sigma = (1 - sigma) x0 + sigma noise, target v = noise - x0,
        so the loss is ||v - v_theta||^2. Timesteps default to `training_timesteps`.
        """
        n = self.scheduler.config.num_train_timesteps
        t = (self.training_timesteps(len(x0), generator) if timesteps is None else timesteps).to(x0.device)
        noise = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        if self.flow:
            sigma = (t / n).reshape(-1, *([1] * (x0.ndim - 1)))
            x_t, target = (1 - sigma) * x0 + sigma * noise, noise - x0
        else:
            x_t = self.scheduler.add_noise(x0, noise, t)
            target = {"epsilon": lambda: noise, "sample": lambda: x0,
                      "v_prediction": lambda: self.scheduler.get_velocity(x0, noise, t)}[
                self.scheduler.config.prediction_type]()
        pred = self.denoise(x_t.to(prompt_embeds.dtype), t, prompt_embeds)
        return pred.float(), target.float()


def pack_prompt(embeds, pooled):
    """SD3's prompt, token embeddings (B, L, D) and pooled vector (B, P), as one tensor (B, L + 1, max(D, P))
    whose last row is the pooled vector (zero-padded), so that the trainer stores, batches and indexes it as it
    does SD's (B, L, D). SD 3.5: D = 4,096, P = 2,048."""
    width = max(embeds.shape[-1], pooled.shape[-1])
    rows = [torch.nn.functional.pad(e, (0, width - e.shape[-1])) for e in (embeds, pooled[:, None])]
    return torch.cat(rows, dim=1)                                        # (B, L + 1, W)


def unpack_prompt(packed, width, pooled_width):
    """pack_prompt's inverse: (embeds (B, L, width), pooled (B, pooled_width))."""
    return packed[:, :-1, :width], packed[:, -1, :pooled_width]
