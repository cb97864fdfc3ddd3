"""A text-conditional diffusion model as an RL policy: pi_theta(x_{t-1} | x_t, c).

The same class serves Stable Diffusion (latent space, through a VAE) and the tiny world (pixel space, no
VAE): a diffusers UNet2DConditionModel, a DDIM or DDPM scheduler, a text encoder and its tokenizer.
Classifier-free guidance is part of the policy: the action's mean comes from the guided noise prediction
eps_u + w (eps_c - eps_u), at sampling and at training time alike, so the log-probabilities recomputed for
PPO equal those stored at sampling (ratio 1 at the first update).
"""

from dataclasses import dataclass

import torch
from diffusers.utils.torch_utils import randn_tensor

from minirl.mdp import gaussian_log_prob, mean_and_sigma, step_sigmas, step_with_logprob


@dataclass
class Trajectory:
    """A batch of denoising chains rolled out by the policy."""
    latents: torch.Tensor        # (B, T+1, C, H, W) x_T ... x_0, fp32
    log_probs: torch.Tensor      # (B, T) log p(x_{t-1} | x_t, c) when sampled
    timesteps: torch.Tensor      # (T,) the scheduler's timesteps, x_T's first
    prompt_embeds: torch.Tensor  # (B, L, D)
    prompts: list


class DiffusionPolicy:
    """UNet + scheduler + text encoder + tokenizer (+ optional VAE), with classifier-free guidance.

    min_sigma: steps whose sigma_t is below it are sampled as usual but never trained on. With 20 DDIM
    steps of Stable Diffusion's schedule the last two have sigma_t 0.041 and 0.021 (0.167 one step
    earlier); a weight change moves their log-probability 1/sigma_t times faster, and a step with sigma_t = 0
    (steps_offset=0, or DDPM's step to t = 0) has no log-probability at all.
    """

    def __init__(self, unet, scheduler, text_encoder, tokenizer, vae=None, *, num_steps=20, eta=1.0,
                 guidance_scale=5.0, min_sigma=0.05):
        if not (isinstance(num_steps, int) and num_steps >= 1):
            raise ValueError(f"num_steps must be an int >= 1; got {num_steps!r}")
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0 (1 or less turns guidance off); got {guidance_scale}")
        self.unet, self.scheduler, self.text_encoder, self.tokenizer, self.vae = \
            unet, scheduler, text_encoder, tokenizer, vae
        self.eta, self.guidance_scale, self.min_sigma = eta, guidance_scale, min_sigma
        scheduler.set_timesteps(num_steps)
        self.sigmas = step_sigmas(scheduler, eta)                           # (T,)
        self.trainable_steps = torch.nonzero((self.sigmas >= min_sigma) & (self.sigmas > 0)).flatten()
        if len(self.trainable_steps) == 0:
            raise ValueError(f"no step has sigma_t >= min_sigma={min_sigma} (largest {self.sigmas.max():.4f}); "
                             f"lower min_sigma or raise eta")
        size = unet.config.sample_size
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
        ids = self.tokenizer(list(prompts), padding="max_length", truncation=True, return_tensors="pt",
                             max_length=self.tokenizer.model_max_length).input_ids
        return self.text_encoder(ids.to(self.device))[0]                     # (B, L, D)

    def uncond_embeds(self):
        if self._uncond_embeds is None:  # the text encoder is frozen, so "" is encoded once
            self._uncond_embeds = self.encode_prompts([""])                 # (1, L, D)
        return self._uncond_embeds

    def predict_noise(self, x_t, t, prompt_embeds):
        """The (guided) model output at (x_t, t, c); x_t (B, C, H, W), t int or (B,), embeds (B, L, D)."""
        t = torch.as_tensor(t, device=x_t.device).expand(len(x_t))
        dtype = prompt_embeds.dtype
        if not self.do_cfg:
            return self.unet(x_t.to(dtype), t, encoder_hidden_states=prompt_embeds).sample.float()
        uncond = self.uncond_embeds().expand(len(x_t), -1, -1).to(dtype)
        out = self.unet(torch.cat([x_t, x_t]).to(dtype), torch.cat([t, t]),
                        encoder_hidden_states=torch.cat([uncond, prompt_embeds])).sample.float()
        eps_u, eps_c = out.chunk(2)
        return eps_u + self.guidance_scale * (eps_c - eps_u)

    def step(self, x_t, t, prompt_embeds, prev_sample=None, generator=None):
        """One policy step: returns (x_{t-1}, log_prob (B,)); with prev_sample given, its log-probability."""
        model_output = self.predict_noise(x_t, t, prompt_embeds)
        return step_with_logprob(self.scheduler, model_output, t, x_t, eta=self.eta,
                                 prev_sample=prev_sample, generator=generator)

    @torch.no_grad()
    def rollout(self, prompts, generator=None):
        """Sample one batch of trajectories. generator: one torch.Generator, or a list with one per sample
        (then each chain depends only on its own seed, whatever the batch size or process count)."""
        prompt_embeds = self.encode_prompts(prompts)
        x = randn_tensor((len(prompts), *self.latent_shape), generator=generator, device=self.device,
                         dtype=torch.float32)
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
        latents. With fresh noise, shows which steps decide an outcome (assets/tinyworld/decided.py)."""
        if not 0 <= k <= self.num_steps:
            raise ValueError(f"k must be a step index in [0, {self.num_steps}]; got {k}")
        for t in self.scheduler.timesteps[k:]:
            x, _ = self.step(x, t, prompt_embeds, generator=generator)
        return x

    def transition(self, x_t, t, prompt_embeds):
        """The action distribution pi_theta(. | x_t, c) = N(mean, sigma_t^2): (mean (B, C, H, W), sigma (B,))."""
        return mean_and_sigma(self.scheduler, self.predict_noise(x_t, t, prompt_embeds), t, x_t, self.eta)

    def log_prob(self, x_t, x_prev, t, prompt_embeds):
        """log p_theta(x_prev | x_t, c) of stored transitions under the current weights, (B,), with grad;
        also returns the step's (mean, sigma) for a KL term. Only for steps with sigma_t > 0."""
        mean, sigma = self.transition(x_t, t, prompt_embeds)
        return gaussian_log_prob(x_prev.float(), mean, sigma), (mean, sigma)

    @torch.no_grad()
    def decode(self, latents):
        """Final latents (B, C, h, w) -> images (B, 3, H, W) in [0, 1]."""
        if self.vae is not None:
            latents = self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor).sample
        return (latents.float() / 2 + 0.5).clamp(0, 1)

    @torch.no_grad()
    def encode_images(self, images):
        """Images (B, 3, H, W) in [0, 1] -> x_0 in the space the UNet denoises (latents or pixels)."""
        x = images.to(self.device) * 2 - 1
        if self.vae is None:
            return x
        return self.vae.encode(x.to(self.vae.dtype)).latent_dist.sample() * self.vae.config.scaling_factor

    def denoising_prediction(self, x0, prompt_embeds, generator=None, timesteps=None):
        """For L_pre (paper Eq. 9): noise x0 at t (timesteps (B,), default uniform), return (model prediction,
        its target)."""
        n = self.scheduler.config.num_train_timesteps
        t = torch.randint(0, n, (len(x0),), generator=generator) if timesteps is None else timesteps
        t = t.to(x0.device)
        noise = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = self.scheduler.add_noise(x0, noise, t)
        target = {"epsilon": lambda: noise, "sample": lambda: x0,
                  "v_prediction": lambda: self.scheduler.get_velocity(x0, noise, t)}[
            self.scheduler.config.prediction_type]()
        pred = self.unet(x_t.to(prompt_embeds.dtype), t, encoder_hidden_states=prompt_embeds).sample
        return pred.float(), target.float()
