"""Named presets of `minirl train`: each a documented set of defaults, every one overridable flag by flag.

    minirl train --preset paper --pipeline stabilityai/stable-diffusion-2-base ...   the paper's recipe
    minirl train --preset ddpo --reward aesthetic ...                                 DDPO's defaults
    minirl train --preset flow-grpo --pipeline stabilityai/stable-diffusion-3.5-medium   Flow-GRPO on SD 3.5

`paper` (Zhang et al. 2024, arXiv 2401.12244, Appendix A): SD 2 base at 512 px, the full UNet (no LoRA), 50 DDIM
steps with eta 1, CFG 7, 5 timesteps trained a chain (timestep_fraction 0.105 of the 48 steps whose sigma_t is
at least min_sigma), PPO clip 1e-4, advantages normalised over the global batch and clipped to +-10, AdamW
lr 2e-6 (weight decay 1e-2), bf16, 2,048 samples an iteration (128 GPUs x 16), the three tasks (ImageReward,
skin-tone parity over groups of 16, composition) and L_pre.
One difference: the paper takes a gradient step per sampled timestep (5 an iteration); here the 5 timesteps of
a chain are accumulated into one step, as DDPO's trainer does.

`ddpo` (Black et al. 2023, kvablack/ddpo-pytorch's base config): SD 1.5, LoRA rank 4, 50 steps with eta 1,
CFG 5, every timestep trained, clip 1e-4, per-prompt advantages clipped to +-5, lr 3e-4, 256 samples an epoch.

`flow-grpo` (Liu et al. 2025, yifan123/flow_grpo's config/grpo.py geneval_sd3; ../shared/FLOW.md): SD 3.5 medium at
512 px (`resolution`; its config's own is 1024) with LoRA, 10 SDE steps with noise level 0.7 and CFG 4.5; groups of
24 samples of a prompt, 48 groups an epoch (1,152 samples), group-relative advantages clipped to +-5, PPO clip 1e-4,
one inner epoch and two optimizer steps an epoch (train batch 72 a process on 8 GPUs: on N processes use 576 / N),
KL weight 0.04, lr 3e-4, bf16; the composition reward stands for GenEval. min_sigma 0.05 leaves out the last step
(std 0.006), so 9 of the 10 steps are trained, as Flow-GRPO's timestep_fraction 0.99 does. Differences: LoRA rank 32
with scale 1 (theirs: alpha 64, scale 2); advantages use each group's std (theirs: the batch's, `global_std`); no
EMA of the weights; and the KL term is the true KL of the step's Gaussians, ||mu - mu_ref||^2 / (2 std^2) with std =
s sqrt(-dt), where Flow-GRPO divides by 2 s^2, so the same weight regularises each step 1/|dt| times harder (about
4x to 25x at 10 steps, more on the last).

No preset sets eta: DDIM's eta 1 is `minirl train`'s default, and an --eta is refused where the sampler has
none (`--scheduler ddpm`, SD3's flow), which a preset's value would be too.
"""

PRESETS = {
    "paper": {
        "pipeline": "stabilityai/stable-diffusion-2-base", "reward": "imagereward,parity,composition",
        "lora_rank": 0, "steps": 50, "guidance": 7.0, "timestep_fraction": 0.105, "clip_range": 1e-4,
        "advantages": "batch", "adv_clip": 10.0, "lr": 2e-6, "weight_decay": 1e-2, "mixed_precision": "bf16",
        "samples_per_epoch": 2048, "sample_batch_size": 16, "train_batch_size": 16, "train_micro_batch": 8,
        "epochs": 1000,
    },
    "ddpo": {
        "pipeline": "stable-diffusion-v1-5/stable-diffusion-v1-5", "reward": "aesthetic", "lora_rank": 4,
        "steps": 50, "guidance": 5.0, "timestep_fraction": 1.0, "clip_range": 1e-4,
        "advantages": "per_prompt", "adv_clip": 5.0, "lr": 3e-4, "weight_decay": 1e-4, "mixed_precision": "bf16",
        "samples_per_epoch": 256, "sample_batch_size": 8, "train_batch_size": 8, "epochs": 100,
    },
    "flow-grpo": {
        "pipeline": "stabilityai/stable-diffusion-3.5-medium", "resolution": 512, "reward": "composition",
        "lora_rank": 32,
        "steps": 10, "noise_level": 0.7, "guidance": 4.5, "min_sigma": 0.05, "timestep_fraction": 1.0,
        "clip_range": 1e-4, "advantages": "group", "group_size": ["24"], "adv_clip": 5.0, "kl_weight": 0.04,
        "lr": 3e-4, "weight_decay": 1e-4, "max_grad_norm": 1.0, "mixed_precision": "bf16", "inner_epochs": 1,
        "samples_per_epoch": 1152, "sample_batch_size": 24, "train_batch_size": 72, "train_micro_batch": 9,
        "epochs": 1000,
    },
}


def preset(name):
    """The defaults of preset `name`."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
    return dict(PRESETS[name])
