"""The composition-RL experiment (`minirl composition-rl`, minirl.tinyworld.relation_rl): its evaluation sets,
its bad input, and one tiny run end to end on the committed base."""

import json

import pytest

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
    for bad in ("1,x", "1,-2"):  # argparse names the value and what is valid, and exits
        with pytest.raises(SystemExit):
            main(["composition-rl", "--guidance-sweep", bad])


def test_composition_rl_writes_base_and_rl(tmp_path, capsys):
    """The experiment's own settings (the committed partial-order base, trailing spacing, guidance 1), one
    iteration of 32 samples."""
    out = tmp_path / "run"
    main(["composition-rl", "--epochs", "1", "--samples", "32", "--eval-samples", "1", "--out", str(out)])
    result = json.loads((out / "result.json").read_text())
    for stage in ("base", "rl"):
        assert set(result[stage]) == {"train_success", "heldout_success", "single_success"}
        assert all(0 <= v <= 1 for v in result[stage].values())
    assert result["args"]["relations"] == "left of,right of" and result["args"]["reward"] == "composition"
    assert result["args"]["timestep_spacing"] == "trailing" and result["args"]["guidance"] == 1.0
    printed = capsys.readouterr().out
    assert "train_success" in printed and f"{result['rl']['single_success']:.3f}" in printed


def test_guidance_sweep_evaluates_the_base_at_each_scale(tmp_path):
    main(["composition-rl", "--eval-samples", "1", "--guidance-sweep", "1,3", "--out", str(tmp_path)])
    sweep = json.loads((tmp_path / "guidance.json").read_text())["sweep"]
    assert list(sweep) == ["1", "3"] and sweep["1"] != sweep["3"]
