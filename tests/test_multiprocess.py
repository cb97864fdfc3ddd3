"""Two CPU processes under Accelerate (launched by torchrun; gloo) compute the same all-reduced gradient as one
process with the same global batch, for each kind of advantage and with timestep subsampling, through the Python
API and through the README's torchrun command; and a failure on one process stops every process, with its message.
(Each process shuffles its own samples into minibatches, so with several optimizer steps an epoch the minibatches,
and so the later steps, differ from one process's: the first step of each epoch is the one both make.)"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from minirl.checkpoint import load_state
from minirl.cli import main
from minirl.runlog import read_metrics

HERE = Path(__file__).parent


def free_port():
    """A port no one listens on now (other test runs on this machine launch processes too)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def torchrun(n, *program, env=os.environ):
    """`torchrun --nproc_per_node n PROGRAM...` as a user types it, in the environment `env`, one thread a process."""
    env = {**env, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_port", free_port(),
           *program]
    return subprocess.run(cmd, env=env, check=True, timeout=600)


def launch(n, folder, out, mode="batch", fraction=1.0):
    torchrun(n, str(HERE / "mp_train.py"), str(folder), str(out), mode, str(fraction),
             env={**os.environ, "PYTHONPATH": str(HERE)})


def relative_error(a, b, scale):
    """||a - b|| / ||scale|| over every tensor of the dicts a, b and scale."""
    norm = lambda d: sum(float(v.norm() ** 2) for v in d.values()) ** 0.5  # noqa: E731
    return norm({n: a[n] - b[n] for n in a}) / norm(scale)


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
    assert all(g.norm() > 0 for g in g1.values())                   # LoRA's B perturbed: every weight has one
    assert relative_error(g1, g2, g1) < 1e-4                        # the same all-reduced gradient
    assert m1["grad_norm"] == pytest.approx(m2["grad_norm"], rel=1e-4)  # logged from every process, averaged
    assert m1["approx_kl"] == pytest.approx(m2["approx_kl"], abs=1e-9)


def test_the_readme_torchrun_command_makes_the_updates_of_one_process(tiny_sd, tmp_path):
    """`torchrun --nproc_per_node 2 -m minirl.cli train ...` as the README gives it for CPUs (no ACCELERATE_USE_CPU):
    one run of two processes (each epoch once in metrics.jsonl), whose optimizer step is that of one process with the
    same global batch; and its evaluation on held-out prompts, shared by the processes, is one's."""
    run = ["train", "--pipeline", str(tiny_sd), "--prompts", "cat,dog,horse,monkey", "--epochs", "1",
           "--samples-per-epoch", "8", "--sample-batch-size", "4", "--steps", "4", "--lr", "1e-3", "--image-every", "0",
           "--eval-every", "1", "--eval-prompts", "a fish,a bird,a tree"]
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    torchrun(2, "-m", "minirl.cli", *run, "--train-batch-size", "4", "--out", str(tmp_path / "2"), env=env)
    main([*run, "--train-batch-size", "8", "--out", str(tmp_path / "1")])
    (one,), (two,) = read_metrics(tmp_path / "1"), read_metrics(tmp_path / "2")
    assert json.loads((tmp_path / "2" / "config.json").read_text())["num_processes"] == 2
    assert one["global_step"] == two["global_step"] == 1 and one["reward_mean"] == two["reward_mean"]
    assert one["eval_reward_mean"] == pytest.approx(two["eval_reward_mean"], rel=1e-2)
    evaluated = json.loads((tmp_path / "2" / "eval" / "jpeg_compressibility_epoch0001.json").read_text())
    assert [e["prompt"] for e in evaluated] == ["a fish", "a bird", "a tree"]  # both processes' samples, in order
    # AdamW's first moment after one step, 0.1 g: the all-reduced gradient (the weights themselves differ by more
    # than float noise where Adam's first step, g / |g| elementwise, meets a tiny |g|)
    m1, m2 = ({i: s["exp_avg"] for i, s in load_state(tmp_path / n / "checkpoints")["optimizer"]["state"].items()}
              for n in "12")
    assert relative_error(m1, m2, m1) < 1e-4


def test_a_bad_reward_on_one_process_stops_all_with_its_message(tiny_sd, tmp_path):
    """The processes are started one by one, as on several machines (no torchrun agent to tear the others down
    when one fails): the process whose reward fails raises its own error, and the other stops too, with that
    error's message, instead of waiting in the next collective."""
    env = {**os.environ, "PYTHONPATH": str(HERE), "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": free_port()}
    start = time.perf_counter()
    ranks = [subprocess.Popen([sys.executable, str(HERE / "mp_train.py"), str(tiny_sd), str(tmp_path), "batch", "1.0",
                               "bad_reward_on_rank1"], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stderr=subprocess.PIPE, text=True) for r in range(2)]
    errors = [p.communicate(timeout=300)[1] for p in ranks]
    assert time.perf_counter() - start < 300 and all(p.returncode != 0 for p in ranks)
    message = "reward 'jpeg' returned non-finite values [nan] at batch positions [0]"
    assert message in errors[1]
    assert f"another process failed, so this one stops too: ValueError: {message}" in errors[0]
