"""Two CPU processes under Accelerate (launched by torchrun; gloo) compute the same all-reduced gradient as one
process with the same global batch, for each kind of advantage and with timestep subsampling; and a failure on
one process stops every process, with its message."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from minirl.runlog import read_metrics

HERE = Path(__file__).parent


def launch(n, folder, out, mode="batch", fraction=1.0, *extra, check=True):
    env = {**os.environ, "PYTHONPATH": str(HERE), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_port", "29517",
           str(HERE / "mp_train.py"), str(folder), str(out), mode, str(fraction), *extra]
    return subprocess.run(cmd, env=env, check=check, timeout=600, capture_output=not check, text=True)


@pytest.mark.parametrize("mode, fraction", [("per_prompt", 0.5), ("group", 1.0)])
def test_two_processes_compute_the_gradient_of_one(tiny_sd, tmp_path, mode, fraction):
    runs = {}
    for n in (1, 2):
        out = tmp_path / str(n)
        launch(n, tiny_sd, out, mode, fraction)
        assert json.loads((out / "ok.json").read_text())["num_processes"] == n
        runs[n] = load_file(out / "grads.safetensors"), read_metrics(out)[0]
    (g1, m1), (g2, m2) = runs[1], runs[2]
    assert m1["reward_mean"] == m2["reward_mean"] and m1["reward_std"] == m2["reward_std"]  # one global batch
    assert all(g1[name].norm() > 0 for name in g1)                   # LoRA's B perturbed: every weight has one
    error = sum(float((g1[n] - g2[n]).norm() ** 2) for n in g1) ** 0.5
    scale = sum(float(g1[n].norm() ** 2) for n in g1) ** 0.5
    assert error / scale < 1e-4                                       # the same all-reduced gradient
    assert m1["grad_norm"] == pytest.approx(m2["grad_norm"], rel=1e-4)  # logged from every process, averaged
    assert m1["approx_kl"] == pytest.approx(m2["approx_kl"], abs=1e-9)


def test_a_bad_reward_on_one_process_stops_all_with_its_message(tiny_sd, tmp_path):
    """The processes are started one by one, as on several machines (no torchrun agent to tear the others down
    when one fails): the process whose reward fails raises its own error, and the other stops too, with that
    error's message, instead of waiting in the next collective."""
    env = {**os.environ, "PYTHONPATH": str(HERE), "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29519"}
    start = time.perf_counter()
    ranks = [subprocess.Popen([sys.executable, str(HERE / "mp_train.py"), str(tiny_sd), str(tmp_path), "batch", "1.0",
                               "bad_reward_on_rank1"], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    errors = [p.communicate(timeout=300)[1] for p in ranks]
    assert time.perf_counter() - start < 300 and all(p.returncode != 0 for p in ranks)
    message = "reward 'jpeg' returned non-finite values [nan] at batch positions [0]"
    assert message in errors[1]
    assert f"another process failed, so this one stops too: ValueError: {message}" in errors[0]
