"""Checkpoints: safetensors + JSON round trip, atomic writes, no pickle."""

import json

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
    assert not (tmp_path / "epoch_0002").exists()


def test_json_holds_no_tensor_data_and_missing_folder_is_named(tmp_path):
    checkpoint.save_state({"w": torch.arange(1000.0)}, tmp_path, "c")
    assert len(json.dumps(json.loads((tmp_path / "c" / "state.json").read_text()))) < 200
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        checkpoint.load_state(tmp_path / "nothing")
