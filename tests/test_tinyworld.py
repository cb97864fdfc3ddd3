"""The tiny world's model: its parts, its tokenizer, and pretraining that resumes exactly."""

import json

import pytest
import torch
from safetensors.torch import load_file

from minirl.policy import DiffusionPolicy
from minirl.tinyworld import diffusion, scenes


def test_tokenizer_covers_every_caption_and_pads():
    tok = diffusion.word_tokenizer()
    captions = [c for kind in scenes.KINDS for c in scenes.prompts(kind)] + list(scenes.prompts("relation", "heldout"))
    ids = tok(captions, padding="max_length", truncation=True).input_ids
    assert all(len(row) == diffusion.MAX_TOKENS for row in ids)
    assert tok.unk_token_id not in {i for row in ids for i in row}
    assert tok("a red circle").input_ids == [tok.bos_token_id, *tok.convert_tokens_to_ids(["a", "red", "circle"]),
                                            tok.eos_token_id]


def test_model_is_small_and_uses_a_supported_schedule():
    unet, text_encoder, tokenizer, scheduler = diffusion.build()
    params = sum(p.numel() for m in (unet, text_encoder) for p in m.parameters())
    assert params < 2_000_000  # about 7 MB in fp32 safetensors
    assert scheduler.config.steps_offset == 1


def _policy(objective):
    unet, text_encoder, tokenizer, scheduler = diffusion.build(objective=objective)
    return DiffusionPolicy(unet, scheduler, text_encoder, tokenizer)


def test_pretraining_timesteps_put_the_high_noise_share_in_the_noisiest_fifth():
    policy = _policy("diffusion")
    t = diffusion.timesteps(policy, 64, 32, torch.Generator().manual_seed(0))
    assert t.shape == (64,) and t.min() >= 0 and t.max() < 1000
    assert (t[:32] >= 800).all() and (t[32:] < 800).any()
    assert torch.equal(diffusion.timesteps(policy, 8, 0, torch.Generator().manual_seed(1)),
                       torch.randint(0, 1000, (8,), generator=torch.Generator().manual_seed(1)))
    assert (diffusion.timesteps(policy, 8, 8) >= 800).all()


def test_flow_timesteps_are_logit_normal_sigmas():
    """Flow matching draws sigma = sigmoid(u), u ~ N(0, 1) (shift 1), as t = 1000 sigma: median 500, and a
    quarter of them below 1000 sigmoid(-0.674) = 338 (the normal's first quartile)."""
    t = diffusion.timesteps(_policy("flow"), 20_000, 0, torch.Generator().manual_seed(0))
    assert t.is_floating_point() and 0 < t.min() and t.max() < 1000
    assert abs(t.median() - 500) < 10 and abs((t < 1000 * torch.sigmoid(torch.tensor(-0.6745))).float().mean() - 0.25) < 0.01
    high = diffusion.timesteps(_policy("flow"), 64, 16, torch.Generator().manual_seed(0))
    assert (high[:16] >= 800).all() and (high[16:] < 800).any()


def test_pretraining_batch_draws_the_high_noise_share_from_its_kind():
    import random
    cfg = diffusion.PretrainConfig(batch_size=8, high_noise=0.5, high_noise_kind="relation")
    images, captions = diffusion.pretrain_batch(random.Random(0), cfg, 4)
    assert images.shape == (8, 3, 16, 16) and len(captions) == 8
    assert all(scenes.parse(c)["kind"] == "relation" for c in captions[:4])
    plain = diffusion.PretrainConfig(batch_size=8, high_noise=0.5)  # any kind: the recipe's ordinary batch
    images, captions = diffusion.pretrain_batch(random.Random(0), plain, 4)
    expected, expected_captions, _ = scenes.batch(random.Random(0), 8)
    assert torch.equal(images, expected) and captions == expected_captions


def test_pretraining_batch_mirrors_scenes_but_keeps_their_captions():
    import random
    plain, plain_captions = diffusion.pretrain_batch(random.Random(0), diffusion.PretrainConfig(batch_size=64), 0)
    for flip in (0.0, 0.5, 1.0):
        cfg = diffusion.PretrainConfig(batch_size=64, flip=flip)
        images, captions = diffusion.pretrain_batch(random.Random(0), cfg, 0)
        assert captions == plain_captions
        mirrored = torch.tensor([torch.equal(a, b.flip(-1)) and not torch.equal(a, b) for a, b in zip(images, plain)])
        assert all(torch.equal(a, b) for a, b, m in zip(images, plain, mirrored) if not m)
        assert mirrored.float().mean() == flip if flip in (0.0, 1.0) else 0.3 < mirrored.float().mean() < 0.7


@pytest.mark.parametrize("bad, match", [({"high_noise": 1.5}, "high_noise is a share"),
                                        ({"prediction_type": "eps"}, "prediction_type must be one of"),
                                        ({"flip": 2.0}, "flip is a probability"),
                                        ({"high_noise_kind": "relations"}, "high_noise_kind must be"),
                                        ({"objective": "rectified"}, "objective must be one of"),
                                        ({"objective": "flow", "prediction_type": "v_prediction"},
                                         "flow matching predicts the velocity")])
def test_pretraining_rejects_bad_settings_before_any_work(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        diffusion.pretrain(diffusion.PretrainConfig(out=str(tmp_path / "run"), **bad), log=lambda s: None)
    assert not (tmp_path / "run").exists()


def test_pretraining_resumes_exactly_and_loads_as_a_policy(tmp_path):
    kw = dict(steps=4, batch_size=4, save_every=2, warmup=2)
    straight = diffusion.pretrain(diffusion.PretrainConfig(out=str(tmp_path / "a"), **kw), log=lambda s: None)
    diffusion.pretrain(diffusion.PretrainConfig(out=str(tmp_path / "b"), **{**kw, "steps": 2}), log=lambda s: None)
    resumed = diffusion.pretrain(diffusion.PretrainConfig(out=str(tmp_path / "b"), **kw), resume=True, log=lambda s: None)
    a = load_file(straight / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(resumed / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [json.loads(line)["step"] for line in open(tmp_path / "b" / "loss.jsonl")] == [1, 2, 3, 4]
    policy = diffusion.load_policy(straight, num_steps=4, guidance_scale=3.0)
    traj = policy.rollout(["a red circle", "two blue squares"], torch.Generator().manual_seed(0))
    assert traj.latents.shape == (2, 5, 3, 16, 16) and torch.isfinite(traj.log_probs).all()
    with pytest.raises(FileNotFoundError, match="missing \\['unet'"):
        diffusion.load_policy(tmp_path)
    assert policy.scheduler.timesteps.tolist() == [751, 501, 251, 1]  # the saved "leading" spacing
    seeds = lambda: [torch.Generator().manual_seed(s) for s in (0, 1)]  # noqa: E731
    chains = policy.rollout(["a red circle", "two blue squares"], seeds())
    generators = seeds()
    x_T = torch.stack([torch.randn(3, 16, 16, generator=g) for g in generators])  # the draw rollout makes first
    assert torch.equal(policy.finish(x_T, 0, chains.prompt_embeds, generators), chains.latents[:, -1])
    assert torch.equal(policy.finish(chains.latents[:, 4], 4, chains.prompt_embeds), chains.latents[:, -1])
    with pytest.raises(ValueError, match=r"k must be a step index in \[0, 4\]; got 5"):
        policy.finish(x_T, 5, chains.prompt_embeds)
    trailing = diffusion.load_policy(straight, "trailing", num_steps=4)
    assert trailing.scheduler.timesteps.tolist() == [999, 749, 499, 249]  # starts where no signal is left
    with pytest.raises(ValueError, match="timestep_spacing must be None or one of .*'last'"):
        diffusion.load_policy(straight, "last")


def test_flow_pretraining_gives_a_flow_policy(tmp_path):
    """objective="flow": the UNet learns the velocity v = noise - x_0, the saved model loads
    with its Euler scheduler, and the policy samples with Flow-GRPO's SDE step."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    cfg = diffusion.PretrainConfig(out=str(tmp_path / "flow"), objective="flow", steps=3, batch_size=4, warmup=1,
                                   save_every=3)
    folder = diffusion.pretrain(cfg, log=lambda s: None)
    policy = diffusion.load_policy(folder, num_steps=4, guidance_scale=3.0)
    assert isinstance(policy.scheduler, FlowMatchEulerDiscreteScheduler) and policy.flow
    traj = policy.rollout(["a red circle", "two blue squares"], torch.Generator().manual_seed(0))
    assert traj.latents.shape == (2, 5, 3, 16, 16) and torch.isfinite(traj.log_probs).all()
    assert policy.scheduler.sigmas[0] == 1.0  # the first step starts from pure noise
    with pytest.raises(ValueError, match="timestep_spacing='trailing' is for a DDIM model"):
        diffusion.load_policy(folder, "trailing")


def test_sde_window_explores_inside_and_follows_the_ode_outside():
    """MixGRPO's window (0, 2) of 4 steps: steps 0-1 are the SDE's (random, with a log-probability, trained),
    steps 2-3 the ODE's Euler step (deterministic: the same x_0 from the same x_2 whatever the noise)."""
    from minirl.mdp import flow_ode_step
    unet, text_encoder, tokenizer, scheduler = diffusion.build(objective="flow")
    policy = DiffusionPolicy(unet, scheduler, text_encoder, tokenizer, num_steps=4, guidance_scale=1.0,
                             sde_window=(0, 2))
    assert policy.sigmas[:2].min() > 0 and (policy.sigmas[2:] == 0).all()
    assert policy.trainable_steps.tolist() == [0, 1]
    traj = policy.rollout(["a circle"] * 2, torch.Generator().manual_seed(0))
    assert (traj.log_probs[:, :2] != 0).all() and (traj.log_probs[:, 2:] == 0).all()
    embeds = policy.encode_prompts(["a circle"] * 2)
    x2 = traj.latents[:, 2]
    for seed in (1, 2):
        torch.testing.assert_close(policy.finish(x2, 2, embeds, torch.Generator().manual_seed(seed)),
                                   traj.latents[:, -1])
    t = policy.scheduler.timesteps[2]
    torch.testing.assert_close(traj.latents[:, 3], flow_ode_step(policy.scheduler, policy.predict_noise(
        x2, t, embeds), t, x2))
    with pytest.raises(ValueError, match="outside sde_window=\\(0, 2\\): an ODE step has no log-probability"):
        policy.step(x2, t, embeds, prev_sample=traj.latents[:, 3])
    for window in ((2, 2), (0, 5), (-1, 2), 3, (0.0, 2)):
        with pytest.raises(ValueError, match="sde_window must be \\(start, stop\\) step indices"):
            DiffusionPolicy(unet, scheduler, text_encoder, tokenizer, num_steps=4, sde_window=window)
    with pytest.raises(ValueError, match="for a flow-matching scheduler; got \\(0, 2\\) with DDIMScheduler"):
        DiffusionPolicy(unet, diffusion.build()[3], text_encoder, tokenizer, num_steps=4, sde_window=(0, 2))


def test_committed_base_model_loads_and_matches_its_card():
    """The committed weights load without pickle and still draw single objects in the named colour."""
    from pathlib import Path
    folder = Path(__file__).parents[1] / "assets" / "tinyworld"
    card = json.loads((folder / "card.json").read_text())
    policy = diffusion.load_policy(folder / "model", num_steps=20, guidance_scale=1.0)
    captions = [f"a {c} {s}" for c in scenes.COLOURS for s in scenes.SHAPES]
    images = policy.decode(policy.rollout(captions, [torch.Generator().manual_seed(i) for i in range(12)]).latents[:, -1])
    correct = sum(colour == caption.split()[1] for colour, caption in zip(scenes.dominant_colour(images), captions))
    assert card["guidance_1.0"]["single_colour_accuracy"] >= 0.95
    assert correct >= 11  # 12 prompts, one sample each: the card says 100% over 96 samples


def test_loading_the_tiny_world_draws_no_progress_bar(capfd):
    """A notebook loads the model in many cells; transformers' bar over its 36 tensors would print a line each
    time. The bar is off while it loads and as it was afterwards."""
    from pathlib import Path
    from transformers.utils import logging as transformers_logging
    before = transformers_logging.is_progress_bar_enabled()
    diffusion.load_policy(Path(__file__).parents[1] / "assets" / "tinyworld" / "model")
    assert "Loading weights" not in capfd.readouterr().err
    assert transformers_logging.is_progress_bar_enabled() == before


@pytest.mark.parametrize("objective", ["diffusion", "flow"])
def test_order_use_probe_runs_on_both_objectives(objective):
    from minirl.tinyworld.diagnose import order_use
    result = order_use(_policy(objective), n=8)
    assert result["x0_error"]["caption"] > 0 and 0.5 < result["swapped_over_caption"] < 2  # an untrained UNet
