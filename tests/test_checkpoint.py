"""Checkpoints: safetensors + JSON round trip, atomic writes, no pickle."""

import json
import os
import shutil
import sys

import pytest
import torch

from minirl import checkpoint


def test_optimizer_state_round_trips_with_int_keys(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    state = {"optimizer": optimizer.state_dict(), "rng": checkpoint.rng_state(), "epoch": 3, "name": "x", "none": None}
    folder = checkpoint.save_state(state, tmp_path, "epoch_0003")
    assert sorted(p.name for p in folder.iterdir()) == ["state.json", "state.safetensors"]
    loaded = checkpoint.load_state(tmp_path)  # through the 'latest' pointer
    fresh = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=1e-3)
    fresh.load_state_dict(loaded["optimizer"])
    for key in (0, 1):
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(fresh.state_dict()["state"][key][name], optimizer.state_dict()["state"][key][name])
    assert loaded["epoch"] == 3 and loaded["name"] == "x" and loaded["none"] is None


def test_rng_state_restores_all_generators(tmp_path):
    import random

    import numpy as np
    checkpoint.save_state({"rng": checkpoint.rng_state()}, tmp_path, "a")
    expected = (torch.rand(3), random.random(), np.random.rand())
    checkpoint.set_rng_state(checkpoint.load_state(tmp_path)["rng"])
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(expected[0], again[0]) and expected[1:] == again[1:]


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path):
    checkpoint.save_state({"w": torch.ones(2)}, tmp_path, "epoch_0001")
    with pytest.raises(TypeError, match="cannot checkpoint a value of type object"):
        checkpoint.save_state({"w": torch.zeros(2), "bad": object()}, tmp_path, "epoch_0002")
    assert (tmp_path / "latest").read_text() == "epoch_0001"
    assert torch.equal(checkpoint.load_state(tmp_path)["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_0001", "latest"]  # no scratch folder left


def test_json_holds_no_tensor_data_and_missing_folder_is_named(tmp_path):
    checkpoint.save_state({"w": torch.arange(1000.0)}, tmp_path, "c")
    assert len(json.dumps(json.loads((tmp_path / "c" / "state.json").read_text()))) < 200
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        checkpoint.load_state(tmp_path / "nothing")


def _state(value):
    return {"w": torch.full((64, 64), float(value)), "value": value, "nested": [{"v": torch.tensor([value])}]}


def _complete(folder):
    """Load a checkpoint (folder or root) and check it is whole: its tensors agree with its JSON; return value."""
    state = checkpoint.load_state(folder)
    assert torch.equal(state["w"], torch.full((64, 64), float(state["value"])))
    assert torch.equal(state["nested"][0]["v"], torch.tensor([state["value"]]))
    return state["value"]


def _check_loads(root, allowed):
    """latest loads a complete state among `allowed`, and every visible folder is a complete checkpoint."""
    value = _complete(root)
    assert value in allowed
    for folder in root.iterdir():
        if folder.is_dir() and not folder.name.startswith("."):
            _complete(folder)
    return value


FILE_SYSTEM_STEPS = {"save_state", "prune", "_point", "_scratch", "_remove_scratch"}  # checkpoint's functions


def _states_a_kill_would_leave(root, action, copies):
    """Run `action`, copying root before each line it runs in checkpoint's functions that touch the disk: a kill
    (SIGKILL: no cleanup runs) at that moment would leave exactly that copy. Returns the copies."""
    states, outer = [], sys.gettrace()

    def trace(frame, event, arg):
        if frame.f_code.co_filename != checkpoint.__file__ or frame.f_code.co_name not in FILE_SYSTEM_STEPS:
            return None
        if event == "line":
            states.append(shutil.copytree(root, copies / str(len(states))))
        return trace

    sys.settrace(trace)
    try:
        action()
    finally:
        sys.settrace(outer)
    return states


@pytest.mark.parametrize("scenario", ["new", "replace"])
def test_a_kill_at_any_line_of_a_save_leaves_a_loadable_latest(tmp_path, scenario):
    """A save of epoch_0002 then prune(keep=1), killed before any line of the checkpoint functions that touch the
    disk. A kill inside a line (a half-written file, a half-deleted folder) differs from one before it only
    inside a scratch folder. After every kill, latest loads the old or the new state, complete, every visible
    folder is complete, and the next save and prune leave no scratch folder. "replace": epoch_0002 exists and
    is latest, and is saved again."""
    root = tmp_path / "root"
    checkpoint.save_state(_state(10), root, "epoch_0001")
    if scenario == "replace":
        checkpoint.save_state(_state(20), root, "epoch_0002")
    old, new = (10, 20) if scenario == "new" else (20, 21)

    def save():
        checkpoint.save_state(_state(new), root, "epoch_0002")
        checkpoint.prune(root, 1)

    states = _states_a_kill_would_leave(root, save, tmp_path / "killed")
    assert len(states) > 10  # the trace saw the save's lines
    loaded = []
    for state in states + [root]:
        loaded.append(_check_loads(state, {old, new}))
        checkpoint.save_state(_state(new), state, "epoch_0002")  # the next save, after the kill
        checkpoint.prune(state, 1)
        assert sorted(p.name for p in state.iterdir() if p.is_dir()) == ["epoch_0002"], state
        assert _complete(state) == new
    assert loaded[0] == old and loaded[-1] == new


def test_prune_sorts_by_number_keeps_latest_and_removes_scratch(tmp_path):
    for epoch in (9998, 10000, 9999):
        checkpoint.save_state({"epoch": epoch}, tmp_path, f"epoch_{epoch:04d}")
    (tmp_path / ".epoch_10001.abc123.tmp").mkdir()  # what a save killed while writing leaves
    checkpoint.prune(tmp_path, 2)  # as text, epoch_10000 sorts first and would go
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_10000", "epoch_9999", "latest"]
    assert checkpoint.load_state(tmp_path)["epoch"] == 9999  # latest: the last one saved
    checkpoint.prune(tmp_path, 1)  # the newest by number, and latest's folder, whatever its name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_10000", "epoch_9999", "latest"]
    (tmp_path / ".epoch_10001.abc123.tmp").mkdir()
    checkpoint.save_state({"epoch": 10001}, tmp_path, "epoch_10001")  # a save removes scratch folders too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_10000", "epoch_10001", "epoch_9999", "latest"]


@pytest.mark.parametrize("keep", [0, -1, 1.5, None])
def test_prune_needs_keep_of_at_least_one(tmp_path, keep):
    checkpoint.save_state({"a": 1}, tmp_path, "a")
    with pytest.raises(ValueError, match=rf"keep must be an int >= 1 \(the number of checkpoints to keep\); "
                                         rf"got {keep}"):
        checkpoint.prune(tmp_path, keep)
    assert checkpoint.load_state(tmp_path) == {"a": 1}


@pytest.mark.parametrize("name", ["latest", ".hidden", "a/b", ""])
def test_checkpoint_names_that_would_clash_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match=rf"name must be a folder name, not 'latest' and not starting with '.'.*"
                                         rf"got {name!r}"):
        checkpoint.save_state({"a": 1}, tmp_path, name)
