"""Notebook 01's coding exercise, answered (for teachers): classifier-free guidance."""


def guided_noise(unet, x_t, t, cond_embeds, uncond_embeds, w):
    """x_t (B, 3, 16, 16), t an int, embeds (B, L, D), w the guidance scale -> guided eps (B, 3, 16, 16)."""
    eps_c = unet(x_t, t, encoder_hidden_states=cond_embeds).sample    # (B, 3, 16, 16) conditional
    eps_u = unet(x_t, t, encoder_hidden_states=uncond_embeds).sample  # (B, 3, 16, 16) unconditional
    return eps_u + w * (eps_c - eps_u)
