"""The composition-RL experiment (`minirl composition-rl`, minirl.tinyworld.relation_rl): its evaluation sets,
its bad input, and one tiny run end to end on the committed base."""

import json

import pytest
import torch
from safetensors.torch import load_file

from minirl.cli import main
from minirl.tinyworld import demo, relation_rl, scenes


def test_eval_sets_hold_the_named_relations_of_each_split():
    sets = relation_rl.eval_sets(2, ("left of", "right of"))
    assert set(sets) == set(relation_rl.SETS)
    for split in scenes.SPLITS:
        pairs = sets[f"relation_{split}"]
        captions = {c for c, _ in pairs}
        assert len(pairs) == 2 * len(captions) == 96
        assert {scenes.parse(c)["relation"] for c in captions} == {"left of", "right of"}
        assert all(scenes.is_heldout(scenes.parse(c)) == (split == "heldout") for c in captions)
    assert sets == relation_rl.eval_sets(2, ("left of", "right of"))  # the same prompts and seeds every time
    assert sets["single"] == demo.eval_prompts(2)["single"]
    every = relation_rl.eval_sets(2)  # no relations named: the demo's evaluation
    assert every["relation_train"] == demo.eval_prompts(2)["relation_train"]


def test_bad_relations_and_settings_are_named():
    with pytest.raises(ValueError, match=r"unknown relations \['upside'\].*'left of'"):
        relation_rl.relation_words("left of,upside")
    with pytest.raises(SystemExit, match="--samples is 20; give a multiple of 32"):  # before the base's evaluation
        main(["composition-rl", "--model", str(demo.ASSETS / "model"), "--samples", "20"])
    with pytest.raises(SystemExit, match=r"unknown tasks \['colour'\]; choose one or more of \['composition'"):
        main(["composition-rl", "--tasks", "composition,colour"])
    for flag, bad in (("--guidance-sweep", "1,x"), ("--guidance-sweep", "1,-2"), ("--alignment-tax", "0,0"),
                      ("--alignment-tax", "0,a")):  # argparse names the value and what is valid, and exits
        with pytest.raises(SystemExit):
            main(["composition-rl", flag, bad])


def test_composition_rl_writes_base_and_rl(tmp_path, capsys):
    """The experiment's own settings (the committed partial-order base, trailing spacing, guidance 1), one
    iteration of 32 samples."""
    out = tmp_path / "run"
    main(["composition-rl", "--epochs", "1", "--samples", "32", "--eval-samples", "1", "--out", str(out)])
    result = json.loads((out / "result.json").read_text())
    for stage in ("base", "rl"):
        assert set(result[stage]) == set(relation_rl.RESULT.values())
        assert all(0 <= result[stage][k] <= 1 for k in ("train_success", "heldout_success", "single_success",
                                                         "statistical_parity"))
        assert result[stage]["preference_reward"] > 0  # the learned preference score of single objects
    assert result["args"]["relations"] == "left of,right of" and result["args"]["reward"] == "composition"
    assert result["args"]["timestep_spacing"] == "trailing" and result["args"]["guidance"] == 1.0
    printed = capsys.readouterr().out
    assert "train_success" in printed and f"{result['rl']['single_success']:.3f}" in printed


def test_guidance_sweep_evaluates_the_base_at_each_scale(tmp_path):
    main(["composition-rl", "--eval-samples", "1", "--guidance-sweep", "1,3", "--out", str(tmp_path)])
    sweep = json.loads((tmp_path / "guidance.json").read_text())["sweep"]
    assert list(sweep) == ["1", "3"] and sweep["1"] != sweep["3"]


def test_alignment_tax_runs_each_task_alone_and_jointly_on_one_base(tmp_path, monkeypatch, capsys):
    """The bookkeeping, with each run's result made up: a run gains on the tasks it trains (parity: SP falls)."""
    calls = []

    def made_up_run(args, base=None):
        calls.append((args.seed, args.tasks, base is None))
        trained = args.tasks.split(",")
        numbers = {"relation_train": 0.7, "relation_heldout": 0.6, "single": 1.0, "preference": 30.0,
                   "statistical_parity": 0.6}
        tuned = {**numbers, "relation_train": 0.7 + 0.2 * ("composition" in trained) + 0.01 * args.seed,
                 "preference": 30.0 + ("preference" in trained),
                 "statistical_parity": 0.6 - 0.3 * ("parity" in trained)}
        images = {name: torch.rand(2, 3, 16, 16) for name in relation_rl.SETS}
        return {"base": numbers, "tuned": tuned, "base_images": images, "images": images}

    monkeypatch.setattr(relation_rl, "run", made_up_run)
    main(["composition-rl", "--alignment-tax", "0,1", "--epochs", "3", "--out", str(tmp_path)])
    assert calls[0] == (0, "composition,preference,parity", True)  # the base is evaluated once
    assert [c[1] for c in calls[1:4]] == ["composition", "preference", "parity"] and not any(c[2] for c in calls[1:])
    assert [c[0] for c in calls] == [0] * 4 + [1] * 4
    gains = json.loads((tmp_path / "alignment_tax.json").read_text())["gains"]
    assert gains["joint"]["composition"] == pytest.approx([0.2, 0.21])
    assert gains["joint"]["parity"] == pytest.approx([0.3, 0.3]) and gains["preference only"]["parity"] == [0, 0]
    assert gains["parity only"]["preference"] == [0, 0] and gains["preference only"]["preference"] == [1, 1]
    table = (tmp_path / "alignment_tax.md").read_text()
    assert "seeds [0, 1]; 3 iterations" in table and table in capsys.readouterr().out + "\n"
    images = load_file(tmp_path / "samples.safetensors")
    assert set(images) == {f"{stage}/{name}" for stage in ("base", "joint") for name in relation_rl.SETS}
    assert images["joint/single"].dtype == torch.uint8
