"""The checker of notebook 01's exercise passes a right answer and fails wrong ones without raising."""

from minirl.exercises.solutions.tiny_world import guided_noise as solution
from minirl.exercises.tiny_world import check_guided_noise


def halves(unet, x_t, t, cond_embeds, uncond_embeds):
    eps_u = unet(x_t, t, encoder_hidden_states=uncond_embeds).sample
    eps_c = unet(x_t, t, encoder_hidden_states=cond_embeds).sample
    return eps_u, eps_c


def guided_noise(unet, x_t, t, cond_embeds, uncond_embeds, w):
    eps_u, eps_c = halves(unet, x_t, t, cond_embeds, uncond_embeds)
    return eps_u + w * (eps_c - eps_u)


def guided_noise_offset_by_one(unet, x_t, t, cond_embeds, uncond_embeds, w):
    """A convention off by one: eps_c + w (eps_c - eps_u) is the formula above at w + 1."""
    eps_u, eps_c = halves(unet, x_t, t, cond_embeds, uncond_embeds)
    return eps_c + w * (eps_c - eps_u)


def conditional_only(unet, x_t, t, cond_embeds, uncond_embeds, w):
    return halves(unet, x_t, t, cond_embeds, uncond_embeds)[1]


def stub(*args):
    raise NotImplementedError


def test_guided_noise_checker(capsys):
    assert check_guided_noise(guided_noise)
    assert check_guided_noise(solution)
    assert capsys.readouterr().out.count("[PASS]") == 2
    for wrong in (guided_noise_offset_by_one, conditional_only):
        assert not check_guided_noise(wrong)
        assert "[FAIL] guided_noise: case 0 (t = 901, w = 3" in capsys.readouterr().out
    assert not check_guided_noise(stub)
    assert "not attempted" in capsys.readouterr().out
