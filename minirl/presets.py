"""Named presets of `minirl train`: each a documented set of defaults, every one overridable flag by flag.

    minirl train --preset paper --pipeline stabilityai/stable-diffusion-2-base ...   the paper's recipe
    minirl train --preset ddpo --reward aesthetic ...                                 DDPO's defaults

`paper` (Zhang et al. 2024, Appendix A; paper/NOTES.md): SD 2 base at 512 px, the full UNet (no LoRA), 50 DDIM
steps with eta 1, CFG 7, 5 of the 50 timesteps trained a chain, PPO clip 1e-4, advantages normalised over the
global batch and clipped to +-10, AdamW lr 2e-6 (weight decay 1e-2), bf16, 2,048 samples an iteration
(128 GPUs x 16), the three tasks (ImageReward, skin-tone parity over groups of 16, composition) and L_pre.
One difference: the paper takes a gradient step per sampled timestep (5 an iteration); here the 5 timesteps of
a chain are accumulated into one step, as DDPO's trainer does.

`ddpo` (Black et al. 2023, kvablack/ddpo-pytorch's base config): SD 1.5, LoRA rank 4, 50 steps with eta 1,
CFG 5, every timestep trained, clip 1e-4, per-prompt advantages clipped to +-5, lr 3e-4, 256 samples an epoch.
"""

PRESETS = {
    "paper": {
        "pipeline": "stabilityai/stable-diffusion-2-base", "reward": "imagereward,parity,composition",
        "lora_rank": 0, "steps": 50, "eta": 1.0, "guidance": 7.0, "timestep_fraction": 0.1, "clip_range": 1e-4,
        "advantages": "batch", "adv_clip": 10.0, "lr": 2e-6, "weight_decay": 1e-2, "mixed_precision": "bf16",
        "samples_per_epoch": 2048, "sample_batch_size": 16, "train_batch_size": 16, "train_micro_batch": 8,
        "epochs": 1000,
    },
    "ddpo": {
        "pipeline": "stable-diffusion-v1-5/stable-diffusion-v1-5", "reward": "aesthetic", "lora_rank": 4,
        "steps": 50, "eta": 1.0, "guidance": 5.0, "timestep_fraction": 1.0, "clip_range": 1e-4,
        "advantages": "per_prompt", "adv_clip": 5.0, "lr": 3e-4, "weight_decay": 1e-4, "mixed_precision": "bf16",
        "samples_per_epoch": 256, "sample_batch_size": 8, "train_batch_size": 8, "epochs": 100,
    },
}


def preset(name):
    """The defaults of preset `name`."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
    return dict(PRESETS[name])
