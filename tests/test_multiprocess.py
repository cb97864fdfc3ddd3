"""Two CPU processes under Accelerate (launched by torchrun; gloo) make the same update as one process with the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from minirl.runlog import read_metrics

HERE = Path(__file__).parent


def launch(n, folder, out):
    env = {**os.environ, "PYTHONPATH": str(HERE), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_port", "29517",
           str(HERE / "mp_train.py"), str(folder), str(out)]
    subprocess.run(cmd, env=env, check=True, timeout=600)
    assert json.loads((out / "ok.json").read_text())["num_processes"] == n
    return load_file(out / "final.safetensors"), read_metrics(out)[0]


def test_two_processes_match_one(tiny_sd, tmp_path):
    from helpers import tiny_policy
    policy = tiny_policy(tiny_sd)
    init = {n: p.detach() for n, p in policy.unet.named_parameters() if p.requires_grad}
    one, m1 = launch(1, tiny_sd, tmp_path / "one")
    two, m2 = launch(2, tiny_sd, tmp_path / "two")
    # the same global batch: identical rewards, so batch statistics are global
    assert m1["reward_mean"] == m2["reward_mean"] and m1["reward_std"] == m2["reward_std"]
    delta1 = torch.cat([(one[n] - init[n]).flatten() for n in init])
    delta2 = torch.cat([(two[n] - init[n]).flatten() for n in init])
    assert delta1.norm() > 0
    assert (delta1 - delta2).norm() / delta1.norm() < 1e-3
