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


@pytest.mark.parametrize("clip_range", [0, -0.1, float("nan"), float("inf")])
def test_bad_clip_range(clip_range):
    with pytest.raises(ValueError, match=rf"clip_range must be > 0 and finite .*got {clip_range}$"):
        ppo_loss(torch.zeros(1), torch.zeros(1), torch.zeros(1), clip_range)


def test_reinforce_hand_value_and_no_silent_broadcast():
    log_prob, adv = torch.tensor([-1.0, 1.0, -2.0, 2.0]), torch.tensor([1.0, 0.0, 1.0, 0.0])
    loss, _ = reinforce_loss(log_prob, adv)
    assert loss.item() == 0.75  # -(1 * -1 + 1 * -2) / 4
    # (4,) against (4, 1) would broadcast to a (4, 4) table whose mean is mean(A) * mean(log p) = 0
    with pytest.raises(ValueError, match=r"log_prob, advantages must all have shape \(N,\).*"
                                         r"got log_prob \(4,\), advantages \(4, 1\)"):
        reinforce_loss(log_prob, adv[:, None])


@pytest.mark.parametrize("shapes", [((4,), (4,), (4, 1)), ((4, 1), (4, 1), (4, 1)), ((4,), (3,), (4,)), ((), (), ())])
def test_ppo_checks_per_transition_shapes(shapes):
    log_prob, old, adv = (torch.zeros(shape) for shape in shapes)
    with pytest.raises(ValueError, match=r"log_prob, old_log_prob, advantages must all have shape \(N,\)"):
        ppo_loss(log_prob, old, adv, 0.1)


def test_denoising_and_kl_hand_values():
    loss, info = denoising_loss(torch.tensor([[1.0, 3.0]]), torch.tensor([[0.0, 1.0]]))
    assert loss.item() == pytest.approx((1 + 4) / 2)
    # a batch of two (1, 2, 2) predictions, bf16 in: the mean of the 8 squared errors, in fp32
    pred = torch.tensor([[[[1.0, 2.0], [0.0, -1.0]]], [[[0.5, 0.5], [0.5, 0.5]]]]).bfloat16()
    target = torch.tensor([[[[0.0, 0.0], [0.0, 0.0]]], [[[0.0, 1.0], [2.0, 0.5]]]])
    loss, info = denoising_loss(pred, target)
    assert loss.dtype == torch.float32 and info["pretrain_loss"] == loss
    assert loss.item() == (1 + 4 + 0 + 1 + 0.25 + 0.25 + 2.25 + 0) / 8
    mean, ref = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    sigma = torch.tensor([1.0, 0.5])
    kl, _ = kl_to_reference(mean, ref, sigma)
    # row 0: (1 + 4) / 2 / 2 = 1.25 ; row 1: (0 + 1 / 0.5) / 2 = 1.0 -> mean 1.125
    assert kl.item() == pytest.approx(1.125)
    # against torch.distributions
    p = torch.distributions.Normal(mean, sigma[:, None])
    q = torch.distributions.Normal(ref, sigma[:, None])
    torch.testing.assert_close(kl, torch.distributions.kl_divergence(p, q).mean())
    # the sum over dimensions: row 0 (1 + 4) / 2 = 2.5, row 1 (0 + 1) / (2 * 0.25) = 2.0 -> mean 2.25
    kl_sum, info = kl_to_reference(mean, ref, sigma, reduce="sum")
    assert kl_sum.item() == pytest.approx(2.25) and info["kl"] == kl_sum


@pytest.mark.parametrize("kwargs, match", [
    (dict(reduce="max"), "reduce must be 'mean' or 'sum'; got 'max'"),
    (dict(ref_mean=torch.zeros(2, 3)), r"mean and ref_mean must have the same shape.*ref_mean \(2, 3\)"),
    (dict(sigma=torch.ones(2, 1)), r"sigma shape \(N,\); got .*sigma \(2, 1\)"),
    (dict(sigma=torch.ones(3)), r"sigma shape \(N,\); got .*sigma \(3,\)"),
    (dict(mean=torch.zeros(2), ref_mean=torch.zeros(2)), r"same shape \(N, ...\).*got mean \(2,\)"),
    (dict(sigma=torch.tensor([1.0, 0.0])), r"sigma must be > 0 .*got \[0.0\]"),
])
def test_kl_checks_its_arguments(kwargs, match):
    args = dict(mean=torch.zeros(2, 2), ref_mean=torch.zeros(2, 2), sigma=torch.ones(2))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        kl_to_reference(**args)


def test_denoising_loss_checks_shapes():
    with pytest.raises(ValueError, match=r"model_pred and target must have the same shape; got \(2, 4\) and \(2, 1\)"):
        denoising_loss(torch.zeros(2, 4), torch.zeros(2, 1))
