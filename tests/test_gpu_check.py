"""bench/gpu_check.py, the script a GPU hour runs first: `--smoke` runs its code on the CPU at tiny sizes, every
part, and the budget, out-of-memory and error paths keep what was measured."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import gpu_check  # noqa: E402


def test_the_smoke_run_measures_every_part_on_every_model(tmp_path):
    out = tmp_path / "check.json"
    run = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--smoke", "--out", str(out)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["smoke"] and report["card"]
    assert report["skipped"] == report["errors"] == report["out_of_memory"] == []
    rows = report["rows"]
    models = ["SD 1.5", "SD 2 base", "SD 3.5 medium"]
    expected = {("1 sampling", m) for m in models} | {("2 train step", m) for m in models} \
        | {("3 epoch", "SD 2 base")} | {("4 reward", name) for name in gpu_check.REWARDS}
    assert {(row["part"], row["model"]) for row in rows} == expected
    for row in rows:
        assert math.isfinite(row["seconds"]) and row["seconds"] > 0 and row["peak_GiB"] > 0, row

    def find(part, model):
        return [row for row in rows if (row["part"], row["model"]) == (part, model)]

    for m in models:
        (sampling,) = find("1 sampling", m)
        assert math.isfinite(sampling["ratio"]) and sampling["ratio"] > 0
        lora, full = find("2 train step", m)
        assert lora["workload"].startswith("LoRA") and full["workload"].startswith("full")
        for row in (lora, full):  # the first update is on-policy: the trainer recomputes the sampled log-probabilities
            assert row["first_max_abs_log_ratio"] < 1e-5, row
    (epoch,) = find("3 epoch", "SD 2 base")
    assert epoch["estimate_seconds"] > 0 and len(epoch["epoch_seconds"]) == 2
    assert "| part | model | workload |" in run.stdout and f"written to {out}" in run.stdout


def test_units_past_the_budget_are_skipped_and_failures_kept_apart(tmp_path):
    report = gpu_check.Report(tmp_path / "check.json", budget=1e9, header={"card": "a card", "device": "cpu",
                                                                            "dtype": "float32"})
    ran = []
    report.attempt("fits", 0, lambda: ran.append(report.add("1 sampling", "m", "w", 1.0, peak_mib=1024)))

    def out_of_memory():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore")

    def fails():
        raise ValueError("a bad value")

    report.attempt("too big", 0, out_of_memory)
    report.attempt("broken", 0, fails)
    report.budget = 0
    report.attempt("too long", 10, lambda: ran.append("ran"))
    written = json.loads((tmp_path / "check.json").read_text())
    assert len(ran) == 1 and written["rows"] == [ran[0]] and written["card"] == "a card"
    assert written["out_of_memory"] == ["too big: CUDA out of memory. Tried to allocate 2.00 GiB"]
    assert written["errors"] == ["broken: ValueError: a bad value"]
    assert written["skipped"][0].startswith("too long: planned 10 s, 0 s of the budget left")
    table = report.table()
    assert "| 1 sampling | m | w | 1 |  | 1.0 |" in table and "failed: broken" in table


def test_the_estimate_is_read_from_minirl_cost_or_named_as_unreadable():
    lines = ["estimated epoch time on cuda:0: 41.5 s (per task: ...)", "estimated peak GPU memory: 30.2 GiB (...)"]
    assert gpu_check.parse_estimate(lines) == (41.5, 30.2)
    assert gpu_check.parse_estimate(lines[:1] + ["memory: 0.04 GiB of weights"]) == (41.5, None)
    with pytest.raises(ValueError, match="update ESTIMATE in bench/gpu_check.py"):
        gpu_check.parse_estimate(["an epoch takes 41.5 s"])
