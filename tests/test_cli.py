"""The command line as a user runs it."""

import json

import pytest

from minirl.cli import main
from minirl.runlog import read_metrics

ARGS = ["--prompts", "cat,dog,horse,monkey", "--epochs", "2", "--samples-per-epoch", "4", "--sample-batch-size", "4",
        "--train-batch-size", "2", "--steps", "4", "--eta", "1.0", "--guidance", "5.0", "--lora-rank", "4",
        "--timestep-fraction", "1.0", "--inner-epochs", "1", "--clip-range", "1e-4", "--adv-clip", "5",
        "--lr", "3e-4", "--seed", "0", "--reward", "jpeg_compressibility"]


def test_make_tiny_sd_then_train_and_resume(tmp_path, capsys):
    main(["make-tiny-sd", str(tmp_path / "sd"), "--sample-size", "16"])
    out = tmp_path / "run"
    main(["train", "--pipeline", str(tmp_path / "sd"), *ARGS, "--out", str(out)])
    printed = capsys.readouterr().out
    assert "4 samples = 1 process(es) x 1 batches x 4" in printed  # the batch arithmetic
    metrics = read_metrics(out)
    assert [m["epoch"] for m in metrics] == [1, 2]
    for key in ("epoch", "reward_mean", "reward_std", "approx_kl", "clipfrac", "grad_norm", "epoch_seconds"):
        assert all(key in m for m in metrics), key
    record = json.loads((out / "config.json").read_text())
    assert record["run"]["pipeline"] == str(tmp_path / "sd") and record["config"]["seed"] == 0
    assert record["versions"]["diffusers"]
    main(["train", "--pipeline", str(tmp_path / "sd"), *ARGS, "--epochs", "3", "--out", str(out), "--resume"])
    assert [m["epoch"] for m in read_metrics(out)] == [1, 2, 3]


def test_two_rewards_train_jointly(tiny_sd, tmp_path):
    main(["train", "--pipeline", str(tiny_sd), *ARGS, "--epochs", "1", "--out", str(tmp_path),
          "--reward", "jpeg_compressibility,jpeg_incompressibility"])
    (m,) = read_metrics(tmp_path)
    assert m["jpeg_compressibility/reward_mean"] == pytest.approx(-m["jpeg_incompressibility/reward_mean"], rel=0.05)
    assert m["global_step"] == 4  # 2 optimizer steps a task


@pytest.mark.parametrize("extra, match", [
    (["--prompts", ",,"], "holds no prompt"),
    (["--eta", "0"], "eta must be > 0"),
    (["--steps", "0"], "num_steps must be an int >= 1"),
    (["--sample-batch-size", "3"], "multiple of sample_batch_size=3"),
    (["--mixed-precision", "fp16"], "fp16 is not supported on CPU"),
    (["--reward", "aesthetics"], "unknown reward 'aesthetics'"),
])
def test_bad_arguments_exit_with_a_message(tiny_sd, tmp_path, extra, match):
    with pytest.raises(SystemExit, match=match):
        main(["train", "--pipeline", str(tiny_sd), *ARGS, "--out", str(tmp_path), *extra])
