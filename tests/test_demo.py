"""The tiny world's RL demo: a short run raises a reward by a margin, and the demo writes its run folder."""

import json
import re

import pytest
import torch

from minirl.tinyworld import demo, scenes
from minirl.runlog import read_metrics


def test_parity_rl_removes_part_of_the_colour_bias(tmp_path):
    """Eight iterations of the demo's parity task alone (its soft colour shares) lower the statistical parity of
    'a circle' etc. (base about 0.6: 80-90% red) by more than 0.1, measured on the training batches (4 groups of
    16 each iteration)."""
    cfg = demo.DemoConfig(tasks=("parity",), epochs=8, out=str(tmp_path))
    from minirl.tinyworld import diffusion, judges
    from minirl.trainer import Trainer
    detector, preference = judges.load(cfg.judges)
    policy = diffusion.load_policy(cfg.model, num_steps=cfg.steps, guidance_scale=cfg.guidance)
    policy.unet.requires_grad_(True)
    tasks = demo.make_tasks(cfg.tasks, detector, preference, parity_soft=cfg.parity_soft)
    Trainer(policy, tasks, demo.train_config(cfg), pretrain_data=demo.pretrain_data()).train()
    sp = [m["statistical_parity"] for m in read_metrics(tmp_path)]
    assert sum(sp[-2:]) / 2 < sum(sp[:2]) / 2 - 0.1, sp


def test_demo_writes_its_run_folder(tmp_path):
    printed = []
    result = demo.run(demo.DemoConfig(epochs=1, eval_samples=1, out=str(tmp_path)), log=printed.append)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert set(saved) == {"config", "base", "fine_tuned", "claims_held"}
    assert saved["base"] == result["base"] and set(saved["fine_tuned"]) == set(saved["base"])
    for key, _, _ in demo.ROWS:
        assert 0 <= saved["base"][key] <= 1 or "preference" in key, key
    index = json.loads((tmp_path / "samples" / "index.json").read_text())
    sets = demo.eval_prompts(1)
    assert len(index) == 2 * sum(len(pairs) for pairs in sets.values())
    assert all((tmp_path / entry["file"]).is_file() for entry in index)
    assert {e["stage"] for e in index} == {"before", "after"}
    for name in ("before_after.png", "reward_curves.png", "config.json"):
        assert (tmp_path / name).is_file(), name
    assert any("held-out relations" in line for line in printed)
    for name in ("parity_train", "parity_heldout"):  # every colour's share, so a swing past parity shows
        assert sum(saved["base"][f"parity/{name}/{c}_share"] for c in scenes.COLOURS) == pytest.approx(1)
    assert any(line.startswith("colours of 'a circle' etc., base -> RL: red ") for line in printed)
    assert [m["epoch"] for m in read_metrics(tmp_path)] == [1]
    assert not any("[ ]" in line for line in printed)  # what happened, in sentences: no unchecked boxes
    assert any("notebooks/07_joint_training.ipynb" in line for line in printed)


def test_the_base_samples_are_the_committed_models():
    """The demo reads the base's evaluation images from assets (sampled once): they are keyed to the committed
    model and evaluation, sampling some of them again gives the same images, and another evaluation or
    sampler setting misses the cache (the run samples afresh)."""
    from dataclasses import replace
    from minirl.tinyworld import diffusion
    cfg = demo.DemoConfig()
    cached = demo.load_base_samples(cfg)
    assert cached is not None, f"{cfg.base_samples} is stale: rewrite it with `minirl demo --save-base-samples`"
    sets = demo.eval_prompts(cfg.eval_samples)
    assert {k: len(v) for k, v in cached.items()} == {k: len(v) for k, v in sets.items()}
    policy = diffusion.load_policy(cfg.model, num_steps=cfg.steps, guidance_scale=cfg.guidance)
    fresh = demo.generate(policy, sets["relation_train"][:3] + sets["parity_train"][-3:])
    torch.testing.assert_close(fresh, torch.cat([cached["relation_train"][:3], cached["parity_train"][-3:]]),
                               atol=1e-3, rtol=0)
    for changed in (replace(cfg, guidance=2.0), replace(cfg, eval_samples=1), replace(cfg, base_samples="")):
        assert demo.load_base_samples(changed) is None


def test_sample_base_writes_what_the_demo_reads(tmp_path, monkeypatch):
    from dataclasses import replace
    cfg = replace(demo.DemoConfig(), base_samples=str(tmp_path / "base.safetensors"))
    images = {name: torch.rand(len(pairs), 3, 16, 16) for name, pairs in demo.eval_prompts(cfg.eval_samples).items()}
    monkeypatch.setattr(demo, "generate_sets", lambda policy, sets, desc: images)
    assert demo.sample_base(cfg) == tmp_path / "base.safetensors"
    assert [p.name for p in tmp_path.iterdir()] == ["base.safetensors"]  # written atomically: no scratch left
    loaded = demo.load_base_samples(cfg)
    assert loaded.keys() == images.keys() and all(torch.equal(loaded[k], images[k]) for k in images)


def metrics(sp, single=0.99, rater=0.5, preference=0.0):
    """A made-up evaluation: every key the demo's table and claims read."""
    m = {key: 0.5 for key, _, _ in demo.ROWS}
    m.update({demo.SP: sp, demo.SP_HELDOUT: sp, demo.SINGLE: single, demo.RATER: rater})
    m.update({key: preference for key in demo.PREFERENCE})
    m.update({f"parity/parity_train/{c}_share": s for c, s in zip(scenes.COLOURS, (0.7, 0.1, 0.1, 0.1))})
    return m


def test_a_claim_that_fails_on_this_run_is_not_printed_as_held():
    held_everywhere = {c.name for c in demo.CLAIMS}
    base = metrics(sp=0.6)
    good, _ = demo.what_happened(base, metrics(sp=0.2, preference=1.0), held_everywhere)
    bad, held = demo.what_happened(base, metrics(sp=0.5, single=0.8, preference=1.0), held_everywhere)
    claims = {c.name: re.split("[:({]", c.claim)[0] for c in demo.CLAIMS}  # the words before any number
    assert any(line.startswith(claims["parity"]) for line in good)
    assert not held["parity"] and not held["single"] and held["preference"]
    assert not any(line.startswith(claims["parity"]) or line.startswith(claims["single"]) for line in bad)
    assert any("0.60 -> 0.50" in line for line in bad)  # said plainly instead
    assert any(line.startswith(claims["preference"]) for line in bad)
    never, _ = demo.what_happened(base, metrics(sp=0.2, preference=1.0), measured=set())
    assert not any(line.startswith(text) for line in never for text in claims.values())  # not measured: not claimed
    # what the demo claims comes from a bench/demo_seeds.py record: the claims that held on every seed in it
    record = {"base_eval": {"0": base}, "runs": {"0": {"fine_tuned": metrics(sp=0.2, preference=1.0)},
                                                 "1": {"fine_tuned": metrics(sp=0.5, single=0.8, preference=1.0)}}}
    assert demo.held_on_seeds(record) == {"parity_heldout", "preference", "rater"}
    assert demo.held_on_seeds() <= {c.name for c in demo.CLAIMS}  # the committed record reads
    # claims were measured in the default setting: another seed is that setting, another length or task set is not
    assert demo.measured_setting(demo.DemoConfig(seed=7, out="elsewhere"))
    assert not demo.measured_setting(demo.DemoConfig(epochs=1))
    assert not demo.measured_setting(demo.DemoConfig(tasks=demo.TASKS))
    assert good[-1].startswith("Composition is evaluated, not trained")
    assert demo.what_happened(base, base, tasks=demo.TASKS)[0][-1].startswith("Composition is not learned here")


def test_before_after_figure_is_readable(tmp_path):
    """Every image at least 64 px on screen, a label on every row, the prompt under every column, the colour
    histogram; written to before_after.png."""
    sets = demo.eval_prompts(1)
    images = {name: torch.rand(len(pairs), 3, 16, 16) for name, pairs in sets.items()}
    demo.write_samples(tmp_path, images, images, sets, metrics(sp=0.6), metrics(sp=0.2))
    from PIL import Image
    width, height = Image.open(tmp_path / "before_after.png").size
    fig = demo.before_after_figure(images, images, sets, metrics(sp=0.6), metrics(sp=0.2))
    assert (width, height) == tuple(round(x * fig.dpi) for x in fig.get_size_inches())
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 2 * len(demo.FIGURE_SETS) * 9
    assert min(ax.get_window_extent().width for ax in shown) >= 64
    assert sum(bool(ax.get_ylabel()) for ax in shown) == 2 * len(demo.FIGURE_SETS)  # before / after x set
    assert sum(len(ax.texts) for ax in shown) == len(demo.FIGURE_SETS) * 9           # a prompt a column
    assert min(t.get_fontsize() for ax in fig.axes for t in ax.texts) >= 9
    assert len([ax for ax in fig.axes if ax.patches]) == 1                          # the colour histogram


def test_the_demo_weighs_the_parity_loss():
    from minirl.tinyworld import judges
    detector, preference = judges.load(demo.DemoConfig().judges)
    weights = {t.name: t.weight for t in demo.make_tasks(demo.TASKS, detector, preference,
                                                         demo.DemoConfig().parity_weight)}
    assert weights == {"composition": 1.0, "preference": 1.0, "parity": 2.0}
