"""Checkpoints: safetensors + JSON round trip, atomic writes, no pickle."""

import json
import os
import re
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


FILE_SYSTEM_STEPS = {(checkpoint.__file__, name)  # checkpoint's functions that touch the disk
                     for name in ("save_state", "prune", "_point", "write_text", "_scratch", "_remove_scratch")}


def states_a_kill_would_leave(root, action, copies, steps=FILE_SYSTEM_STEPS):
    """Run `action`, copying root before each line it runs in the functions `steps` names as (file, name): a kill
    (SIGKILL: no cleanup runs) at that moment would leave exactly that copy. Returns the copies."""
    states, outer = [], sys.gettrace()

    def trace(frame, event, arg):
        if (frame.f_code.co_filename, frame.f_code.co_name) not in steps:
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

    states = states_a_kill_would_leave(root, save, tmp_path / "killed")
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


def _truncate(path):
    path.write_bytes(path.read_bytes()[:40])


def _with_tree(folder, tree):
    """Replace the tree in a checkpoint's state.json, keeping its id."""
    document = json.loads((folder / "state.json").read_text())
    (folder / "state.json").write_text(json.dumps({**document, "state": tree}))


@pytest.mark.parametrize("damage, reason", [
    (lambda c: _truncate(c / "state.safetensors"), r"state.safetensors cannot be read"),
    (lambda c: (c / "state.safetensors").unlink(), r"state.safetensors cannot be read"),
    (lambda c: _truncate(c / "state.json"), r"state.json is not valid JSON"),
    (lambda c: (c / "state.json").write_text('{"id": 1, "state": {"a": 1}}'), r"state.json and state.safetensors are "
                                                                              r"from different saves"),
    (lambda c: _with_tree(c, {"__tensor__": "t.99"}), r"state.json does not describe state.safetensors' tensors"),
])
def test_a_damaged_checkpoint_is_named(tmp_path, damage, reason):
    folder = checkpoint.save_state(_state(1), tmp_path, "epoch_0001")
    damage(folder)
    with pytest.raises(checkpoint.DamagedCheckpoint, match=rf"checkpoint '.*epoch_0001' is damaged: {reason}"):
        checkpoint.load_state(folder)


def test_state_json_and_state_safetensors_of_different_saves_are_refused(tmp_path):
    """The two files of a checkpoint are tied by an id: a state.json beside another save's tensors (a copy gone
    wrong, a half-restored backup) loads tensors that do not belong to it, unless the id is checked."""
    a = checkpoint.save_state(_state(1), tmp_path, "a")
    b = checkpoint.save_state(_state(2), tmp_path, "b")
    shutil.copy(b / "state.safetensors", a / "state.safetensors")
    with pytest.raises(checkpoint.DamagedCheckpoint, match=r"'.*a' is damaged: state.json and state.safetensors "
                                                           r"are from different saves"):
        checkpoint.load_state(a)


@pytest.mark.parametrize("pointer", ["missing", "dangling", "damaged"])
def test_the_newest_complete_checkpoint_is_found_whatever_latest_says(tmp_path, pointer):
    for value in (1, 2, 3):
        checkpoint.save_state(_state(value), tmp_path, f"epoch_{value:04d}")
    if pointer == "missing":
        (tmp_path / "latest").unlink()
        expected, note = 3, r"no 'latest' file"
    elif pointer == "dangling":
        (tmp_path / "latest").write_text("epoch_0009")
        expected, note = 3, r"'latest' names 'epoch_0009', which is not there"
    else:
        _truncate(tmp_path / "epoch_0003" / "state.safetensors")
        _truncate(tmp_path / "epoch_0002" / "state.json")
        expected, note = 1, r"checkpoint '.*epoch_0003' is damaged: .*; checkpoint '.*epoch_0002' is damaged"
    folder, state, notes = checkpoint.load_newest(tmp_path)
    assert folder == tmp_path / f"epoch_{expected:04d}" and _complete(folder) == expected == state["value"]
    assert re.search(note, "; ".join(notes)), notes


def test_a_check_that_refuses_a_state_passes_over_it(tmp_path):
    """The trainer's check of a state's fields (a wrong type in state.json) counts as damage: the next older
    checkpoint is tried; with none left the error lists every checkpoint's damage."""
    checkpoint.save_state(_state(1), tmp_path, "epoch_0001")
    checkpoint.save_state({**_state(2), "value": "2"}, tmp_path, "epoch_0002")

    def check(state):
        if not isinstance(state["value"], int):
            raise checkpoint.DamagedCheckpoint(f"state.json: 'value' is a {type(state['value']).__name__}")

    folder, state, notes = checkpoint.load_newest(tmp_path, check)
    assert folder.name == "epoch_0001" and notes == [f"checkpoint '{tmp_path / 'epoch_0002'}' is damaged: "
                                                     f"state.json: 'value' is a str"]
    _truncate(tmp_path / "epoch_0001" / "state.json")
    with pytest.raises(checkpoint.DamagedCheckpoint, match=r"no complete checkpoint under .*: checkpoint "
                                                           r"'.*epoch_0002' is damaged: .*; checkpoint '.*epoch_0001'"):
        checkpoint.load_newest(tmp_path, check)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint under '.*nothing'"):
        checkpoint.load_newest(tmp_path / "nothing")


def test_a_save_that_fails_on_a_full_disk_names_the_checkpoint(tmp_path, monkeypatch):
    import errno

    def full(tensors, path, metadata=None):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", full)
    with pytest.raises(OSError, match=r"cannot write checkpoint '.*epoch_0001'.*No space left on device"):
        checkpoint.save_state(_state(1), tmp_path, "epoch_0001")
    assert not any(tmp_path.iterdir())  # the scratch folder is gone
