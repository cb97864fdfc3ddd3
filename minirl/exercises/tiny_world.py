"""Checkers for notebook 01 (the tiny world and its model).

`check_guided_noise(fn)`: classifier-free guidance, fn(unet, x_t, t, cond_embeds, uncond_embeds, w) -> the
guided noise prediction eps_u + w (eps_c - eps_u), against `DiffusionPolicy.predict_noise` of the committed
tiny-world model (which batches the two UNet passes into one) at guidance scale w.
"""

from functools import lru_cache

import torch

from minirl.exercises import check

CASES = (  # (timestep, prompts, guidance scale w); w > 1 turns guidance on in DiffusionPolicy, w = 1 is eps_c
    (901, ["a red circle", "two squares"], 3.0),
    (501, ["a green triangle left of a yellow circle", "a circle"], 7.5),
    (101, ["two blue squares", "a yellow triangle"], 1.5),
    (301, ["a square", "a red square above a blue circle"], 1.0),
)


DESCRIPTIONS = ("t = 901, w = 3 (the course's guidance)", "t = 501, w = 7.5 (strong guidance)",
                "t = 101, w = 1.5", "t = 301, w = 1: no guidance, the result is the conditional eps_c alone")


@lru_cache(maxsize=1)
def _policy():
    from minirl import course
    from minirl.tinyworld import diffusion
    return diffusion.load_policy(str(course.ASSETS / "model"), num_steps=10)


@lru_cache(maxsize=1)
@torch.no_grad()
def _cases():
    """(unet, x_t, t, cond_embeds, uncond_embeds, w) for each of CASES, and minirl's guided noise for each."""
    policy = _policy()
    g = torch.Generator().manual_seed(0)
    cases, expected = [], {}
    for t, prompts, w in CASES:
        x_t = torch.randn(len(prompts), *policy.latent_shape, generator=g)  # (B, 3, 16, 16)
        cond = policy.encode_prompts(prompts)                                 # (B, L, D)
        uncond = policy.uncond_embeds().expand(len(prompts), -1, -1)          # (B, L, D): the empty prompt ""
        policy.guidance_scale = w
        expected[t, w] = policy.predict_noise(x_t, t, cond)                   # the reference: DiffusionPolicy
        cases.append((policy.unet, x_t, t, cond, uncond, w))
    return cases, expected


def check_guided_noise(student_fn):
    """student_fn(unet, x_t, t, cond_embeds, uncond_embeds, w) -> guided eps (B, C, H, W)."""
    try:
        cases, expected = _cases()
    except OSError as e:  # a checker never raises: a missing or unreadable model folder is reported
        print(f"[FAIL] guided_noise: could not load the tiny world's model: {type(e).__name__}: {e}")
        return False
    with torch.no_grad():
        return check("guided_noise", student_fn, lambda unet, x, t, c, u, w: expected[t, w], cases,
                     atol=1e-5, rtol=1e-4, descriptions=DESCRIPTIONS)
