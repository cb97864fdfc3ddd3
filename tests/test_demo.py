"""The tiny world's RL demo: a short run raises a reward by a margin, and the demo writes its run folder."""

import json

import pytest

from minirl.tinyworld import demo, scenes
from minirl.runlog import read_metrics


def test_parity_rl_removes_part_of_the_colour_bias(tmp_path):
    """Eight iterations of the demo's parity task alone lower the statistical parity of 'a circle' etc. (base
    about 0.6: 80-90% red) by more than 0.1, measured on the training batches (4 groups of 16 each iteration)."""
    cfg = demo.DemoConfig(tasks=("parity",), epochs=8, out=str(tmp_path))
    from minirl.tinyworld import diffusion, judges
    from minirl.trainer import Trainer
    detector, preference = judges.load(cfg.judges)
    policy = diffusion.load_policy(cfg.model, num_steps=cfg.steps, guidance_scale=cfg.guidance)
    policy.unet.requires_grad_(True)
    Trainer(policy, demo.make_tasks(cfg.tasks, detector, preference), demo.train_config(cfg),
            pretrain_data=demo.pretrain_data()).train()
    sp = [m["statistical_parity"] for m in read_metrics(tmp_path)]
    assert sum(sp[-2:]) / 2 < sum(sp[:2]) / 2 - 0.1, sp


def test_demo_writes_its_run_folder(tmp_path):
    printed = []
    result = demo.run(demo.DemoConfig(epochs=1, eval_samples=1, out=str(tmp_path)), log=printed.append)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert set(saved) == {"config", "base", "fine_tuned", "targets"}
    assert saved["base"] == result["base"] and set(saved["fine_tuned"]) == set(saved["base"])
    for key, _, _ in demo.ROWS:
        assert 0 <= saved["base"][key] <= 1 or "preference" in key, key
    index = json.loads((tmp_path / "samples" / "index.json").read_text())
    sets = demo.eval_prompts(1)
    assert len(index) == 2 * sum(len(pairs) for pairs in sets.values())
    assert all((tmp_path / entry["file"]).is_file() for entry in index)
    assert {e["stage"] for e in index} == {"before", "after"}
    for name in ("before_after.png", "before_after.json", "reward_curves.png", "config.json"):
        assert (tmp_path / name).is_file(), name
    assert any("held-out relations" in line for line in printed)
    for name in ("parity_train", "parity_heldout"):  # every colour's share, so a swing past parity shows
        assert sum(saved["base"][f"parity/{name}/{c}_share"] for c in scenes.COLOURS) == pytest.approx(1)
    assert any(line.startswith("colours of 'a circle' etc., base -> RL: red ") for line in printed)
    assert [m["epoch"] for m in read_metrics(tmp_path)] == [1]
