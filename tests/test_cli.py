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
    """Algorithm 1: the tasks in turn. The first task samples before any update, with the seeds of task 0: its
    rewards are exactly a single-task run's; the second scores +kB where the first scores -kB."""
    main(["train", "--pipeline", str(tiny_sd), *ARGS, "--epochs", "1", "--out", str(tmp_path / "joint"),
          "--reward", "jpeg_compressibility,jpeg_incompressibility"])
    main(["train", "--pipeline", str(tiny_sd), *ARGS, "--epochs", "1", "--out", str(tmp_path / "single")])
    (joint,), (single,) = read_metrics(tmp_path / "joint"), read_metrics(tmp_path / "single")
    assert joint["jpeg_compressibility/reward_mean"] == single["reward_mean"]
    assert joint["jpeg_compressibility/reward_std"] == single["reward_std"]
    assert joint["jpeg_compressibility/reward_mean"] < 0 < joint["jpeg_incompressibility/reward_mean"]
    assert joint["global_step"] == 4  # 2 optimizer steps a task


@pytest.mark.parametrize("extra, match", [
    (["--prompts", ",,"], "holds no prompt"),
    (["--eta", "0"], "--eta must be a finite number > 0 and <= 1; got 0.0"),
    (["--steps", "0"], "--steps must be an int >= 1; got 0"),
    (["--sample-batch-size", "3"], "multiple of sample_batch_size=3"),
    (["--mixed-precision", "fp16"], "fp16 is not supported on CPU"),
    (["--reward", "aesthetics"], "unknown reward 'aesthetics'"),
])
def test_bad_arguments_exit_with_a_message(tiny_sd, tmp_path, extra, match):
    with pytest.raises(SystemExit, match=match):
        main(["train", "--pipeline", str(tiny_sd), *ARGS, "--out", str(tmp_path), *extra])


def test_make_tiny_rewards_writes_every_twin(tmp_path, capsys):
    from minirl.rewards import MODELS
    main(["make-tiny-rewards", str(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(MODELS)
    assert "load one with --reward NAME=" in capsys.readouterr().out


@pytest.mark.parametrize("name, processes, machines", [("1gpu", 1, 1), ("8gpu", 8, 1), ("multinode", 128, 16)])
def test_accelerate_configs_read_as_accelerate_reads_them(name, processes, machines):
    from accelerate.commands.config.config_args import load_config_from_file
    config = load_config_from_file(f"assets/accelerate/{name}.yaml")
    assert (config.num_processes, config.num_machines, config.mixed_precision) == (processes, machines, "bf16")


def test_demo_command_runs_the_demo_config(monkeypatch):
    """`minirl demo` without options is DemoConfig's defaults, the setting its claims were measured in."""
    from dataclasses import replace
    from minirl.tinyworld import demo
    seen = []
    monkeypatch.setattr(demo, "run", seen.append)
    main(["demo", "--seed", "3"])
    main(["demo", "--tasks", "composition,parity"])
    main(["demo", "--no-parity-soft"])
    assert seen == [replace(demo.DemoConfig(), seed=3), replace(demo.DemoConfig(), tasks=("composition", "parity")),
                    replace(demo.DemoConfig(), parity_soft=False)]


def test_every_train_flag_says_what_it_does():
    import argparse
    from minirl.cli import train_parser
    train = train_parser(argparse.ArgumentParser().add_subparsers())
    assert [a.option_strings for a in train._actions if not a.help] == []


def test_keep_checkpoints_keeps_the_newest(tiny_sd, tmp_path):
    main(["train", "--pipeline", str(tiny_sd), *ARGS, "--keep-checkpoints", "1", "--out", str(tmp_path)])
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if p.is_dir() and p.name[0] != "."] == ["epoch_0002"]


@pytest.fixture
def fresh_accelerator_state():
    """Accelerate keeps one mixed precision a process: a test that changes it starts and ends with none set."""
    from accelerate.state import AcceleratorState
    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


def test_mixed_precision_follows_accelerates_config_unless_given(tiny_sd, tmp_path, monkeypatch, capsys,
                                                                  fresh_accelerator_state):
    """`accelerate launch --config_file assets/accelerate/1gpu.yaml` sets ACCELERATE_MIXED_PRECISION from the file's
    mixed_precision (bf16): a run without --mixed-precision trains in it, and says so."""
    from argparse import Namespace
    from minirl.cli import mixed_precision
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    main(["train", "--pipeline", str(tiny_sd), *ARGS, "--epochs", "1", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "mixed precision bf16, trained weights in float32, frozen UNet weights in bfloat16" in printed
    assert json.loads((tmp_path / "config.json").read_text())["run"]["mixed_precision"] == "bf16"
    assert mixed_precision(Namespace(mixed_precision="no")) == "no"     # a flag given wins
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
    assert mixed_precision(Namespace(mixed_precision=None)) == "no"     # neither: fp32
