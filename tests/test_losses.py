"""Hand-computed values for the losses."""

import math

import pytest
import torch

from minirl.losses import denoising_loss, kl_to_reference, ppo_loss, reinforce_loss


def test_ppo_loss_hand_values():
    # ratios e^0.2 ~ 1.2214 (A > 0: clipped to 1.1), e^-0.2 ~ 0.8187 (A > 0: min keeps 0.8187),
    # e^0.05 (A < 0: unclipped 1.0513 * -2 is smaller than 1.05 * -2), 1.0 (A = 3)
    log_ratio = torch.tensor([0.2, -0.2, 0.05, 0.0])
    old = torch.tensor([-1.0, -2.0, 0.5, 3.0])
    adv = torch.tensor([1.0, 1.0, -2.0, 3.0])
    loss, info = ppo_loss(old + log_ratio, old, adv, clip_range=0.1)
    terms = [1.1 * 1, math.exp(-0.2) * 1, math.exp(0.05) * -2, 1.0 * 3]
    assert loss.item() == pytest.approx(-sum(terms) / 4, abs=1e-6)
    assert info["clipfrac"].item() == pytest.approx(0.5)  # |ratio - 1| > 0.1 for the first two
    assert info["approx_kl"].item() == pytest.approx(0.5 * (0.04 + 0.04 + 0.0025) / 4, abs=1e-7)
    assert info["ratio"].item() == pytest.approx((math.exp(0.2) + math.exp(-0.2) + math.exp(0.05) + 1) / 4, abs=1e-6)


def test_ppo_gradient_is_zero_where_clipped_and_reinforce_where_not():
    old = torch.zeros(2)
    new = torch.tensor([0.5, 0.0], requires_grad=True)
    adv = torch.tensor([1.0, 1.0])
    ppo_loss(new, old, adv, clip_range=0.1)[0].backward()
    assert new.grad[0] == 0  # clipped: no gradient
    assert new.grad[1].item() == pytest.approx(-0.5)  # ratio 1: d(-w A / 2)/d log p = -A / 2
    new.grad = None
    reinforce_loss(new, adv)[0].backward()
    torch.testing.assert_close(new.grad, torch.tensor([-0.5, -0.5]))


def test_ppo_at_ratio_one_has_reinforce_gradient():
    """On-policy (ratio 1) the PPO gradient equals REINFORCE's: grad w = grad log p at w = 1."""
    log_p = torch.randn(8, requires_grad=True)
    adv = torch.randn(8)
    g_ppo = torch.autograd.grad(ppo_loss(log_p, log_p.detach(), adv, 1e-4)[0], log_p)[0]
    g_rf = torch.autograd.grad(reinforce_loss(log_p, adv)[0], log_p)[0]
    torch.testing.assert_close(g_ppo, g_rf)


def test_bad_clip_range():
    with pytest.raises(ValueError, match="clip_range must be > 0; got 0"):
        ppo_loss(torch.zeros(1), torch.zeros(1), torch.zeros(1), 0)


def test_denoising_and_kl_hand_values():
    loss, info = denoising_loss(torch.tensor([[1.0, 3.0]]), torch.tensor([[0.0, 1.0]]))
    assert loss.item() == pytest.approx((1 + 4) / 2)
    mean, ref = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    sigma = torch.tensor([1.0, 0.5])
    kl, _ = kl_to_reference(mean, ref, sigma)
    # row 0: (1 + 4) / 2 / 2 = 1.25 ; row 1: (0 + 1 / 0.5) / 2 = 1.0 -> mean 1.125
    assert kl.item() == pytest.approx(1.125)
    # against torch.distributions
    p = torch.distributions.Normal(mean, sigma[:, None])
    q = torch.distributions.Normal(ref, sigma[:, None])
    torch.testing.assert_close(kl, torch.distributions.kl_divergence(p, q).mean())
