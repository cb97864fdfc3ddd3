"""Bad input, tried as a user would: through the command line and the public API, each is refused before any
sampling (no progress, no metrics), with a message that names the setting, the value and what is valid. The
README's "Bad input" table lists these messages."""

import subprocess
import sys

import pytest
import torch

from minirl.cli import main

RUN = ["--prompts", "cat,dog", "--epochs", "1", "--samples-per-epoch", "4", "--sample-batch-size", "4",
       "--train-batch-size", "2", "--steps", "4", "--image-every", "0"]

CLI_CASES = [  # (extra arguments, what the message must say)
    (["--eta", "0"], r"--eta must be a finite number > 0 and <= 1; got 0.0"),
    (["--eta", "1.5"], r"--eta must be a finite number > 0 and <= 1; got 1.5"),
    (["--eta", "nan"], r"--eta must be a finite number > 0 and <= 1; got nan"),
    (["--guidance", "-1"], r"--guidance must be a finite number >= 0; got -1.0"),
    (["--guidance", "inf"], r"--guidance must be a finite number >= 0; got inf"),
    (["--min-sigma", "-0.1"], r"--min-sigma must be a finite number >= 0; got -0.1"),
    (["--steps", "0"], r"--steps must be an int >= 1; got 0"),
    (["--lora-rank", "-1"], r"--lora-rank must be an int >= 0; got -1"),
    (["--clip-range", "0"], r"clip_range must be a finite number > 0; got 0.0"),
    (["--clip-range", "nan"], r"clip_range must be a finite number > 0; got nan"),
    (["--adv-clip", "-1"], r"adv_clip must be a finite number > 0; got -1.0"),
    (["--save-every", "0"], r"save_every must be an int >= 1; got 0"),
    (["--train-micro-batch", "-1"], r"train_micro_batch must be an int >= 0; got -1"),
    (["--max-grad-norm", "0"], r"max_grad_norm must be a finite number > 0; got 0.0"),
    (["--lr", "inf"], r"lr must be a finite number > 0; got inf"),
    (["--weight-decay", "-1"], r"weight_decay must be a finite number >= 0; got -1.0"),
    (["--kl-weight", "nan"], r"kl_weight must be a finite number >= 0; got nan"),
    (["--pretrain-beta", "-1"], r"--pretrain-beta must be a finite number >= 0; got -1.0"),
    (["--timestep-fraction", "0"], r"timestep_fraction must be a finite number > 0 and <= 1; got 0.0"),
    (["--timestep-fraction", "1.5"], r"timestep_fraction must be a finite number > 0 and <= 1; got 1.5"),
    (["--samples-per-epoch", "0"], r"samples_per_epoch must be an int >= 1; got 0"),
    (["--inner-epochs", "0"], r"inner_epochs must be an int >= 1; got 0"),
    (["--sample-batch-size", "3"], r"samples per process \(4\) must be a multiple of sample_batch_size=3; "
                                   r"valid sample batch sizes: \[1, 2, 4\]"),
    (["--reward", "aesthetics"], r"unknown reward 'aesthetics' in --reward 'aesthetics'; available: "),
    (["--prompts", ",,"], r"--prompts ',,' holds no prompt"),
    (["--prompts", "@no/such/file.txt"], r"--prompts '@no/such/file.txt': no such file"),
    (["--group-size", "jpegs=2"], r"names task 'jpegs', which is not one of this run's \['jpeg_compressibility'\]"),
    (["--group-size", "0"], r"--group-size for task 'jpeg_compressibility' must be an int >= 1; got '0'"),
    (["--mixed-precision", "fp16"], r"--mixed-precision fp16 is not supported on CPU"),
    (["--kl-weight", "0.01", "--lora-rank", "0"], r"kl_weight=0.01 needs a LoRA UNet"),
    (["--pretrain-data", "no/such/folder"], r"--pretrain-data 'no/such/folder' is not a folder"),
    (["--pretrain-beta", "1"], r"pretrain_beta=1.0 needs pretrain_data"),
    (["--resume"], r"no checkpoint to resume under"),
]


@pytest.mark.parametrize("extra, match", CLI_CASES, ids=[" ".join(c[0]) for c in CLI_CASES])
def test_the_command_line_names_bad_input_before_sampling(tiny_sd, tmp_path, capsys, extra, match):
    with pytest.raises(SystemExit, match=match):
        main(["train", "--pipeline", str(tiny_sd), *RUN, "--out", str(tmp_path), *extra])
    printed = capsys.readouterr()
    assert "estimated epoch time" not in printed.out and "epochs:" not in printed.err  # no sampling, no progress
    assert not (tmp_path / "metrics.jsonl").exists()


def test_a_missing_pipeline_folder_is_named(tmp_path):
    with pytest.raises(SystemExit, match="could not load pipeline '.*nowhere'"):
        main(["train", "--pipeline", str(tmp_path / "nowhere"), *RUN, "--out", str(tmp_path)])


@pytest.fixture(scope="module")
def finished_run(tiny_sd, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    main(["train", "--pipeline", str(tiny_sd), *RUN, "--out", str(out)])
    return out


@pytest.mark.parametrize("extra, match", [
    (["--steps", "6"], r"steps: 4 in the checkpoint, 6 now"),
    (["--eta", "0.5"], r"eta: 1.0 in the checkpoint, 0.5 now"),
    (["--guidance", "3"], r"guidance: 5.0 in the checkpoint, 3.0 now"),
    (["--prompts", "cat,horse"], r"prompts: \['cat,dog'\] in the checkpoint, \['cat,dog', 'cat,horse'\] now"),
    (["--min-sigma", "0.1"], r"min_sigma: 0.05 in the checkpoint, 0.1 now"),
    (["--reward", "jpeg_incompressibility"], r"reward: 'jpeg_compressibility' in the checkpoint, "
                                             r"'jpeg_incompressibility' now"),
    (["--lora-rank", "8"], r"lora_rank: 4 in the checkpoint, 8 now"),
    (["--lr", "1e-3"], r"lr: 0.0003 in the checkpoint, 0.001 now"),
])
def test_resume_names_every_difference_in_what_defines_the_run(tiny_sd, finished_run, capsys, extra, match):
    with pytest.raises(SystemExit, match=r"cannot resume .*" + match):
        main(["train", "--pipeline", str(tiny_sd), *RUN, "--out", str(finished_run), "--resume", "--epochs", "2",
              *extra])
    assert "estimated epoch time" not in capsys.readouterr().out


def test_resume_may_run_longer_and_log_differently(tiny_sd, finished_run):
    main(["train", "--pipeline", str(tiny_sd), *RUN, "--out", str(finished_run), "--resume", "--epochs", "2",
          "--save-every", "2", "--image-every", "1"])


def test_the_command_line_prints_no_traceback(tiny_sd, tmp_path):
    out = subprocess.run([sys.executable, "-m", "minirl.cli", "train", "--pipeline", str(tiny_sd), *RUN,
                          "--out", str(tmp_path), "--eta", "2"], capture_output=True, text=True)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1] == "error: --eta must be a finite number > 0 and <= 1; got 2.0"
    assert "Traceback" not in out.stderr


def _api_cases():
    from minirl import advantages, losses, mdp
    from minirl.rewards import ParityReward, load
    from minirl.rewards.composition import parse
    from minirl.sd import sd_scheduler
    from minirl.tasks import Task
    from minirl.trainer import TrainConfig
    scheduler = sd_scheduler()
    scheduler.set_timesteps(10)
    x = torch.zeros(2, 4, 8, 8)
    return [
        (lambda: TrainConfig(clip_range=float("nan")).check(1, 1), ValueError, "clip_range must be a finite number > 0; got nan"),
        (lambda: TrainConfig(keep_checkpoints=0).check(1, 1), ValueError, "keep_checkpoints must be an int >= 1; got 0"),
        (lambda: TrainConfig(advantages="global").check(1, 1), ValueError, "advantages must be one of"),
        (lambda: losses.reinforce_loss(torch.zeros(4), torch.ones(4, 1)), ValueError, r"shape"),
        (lambda: losses.kl_to_reference(x, x, torch.ones(2), reduce="max"), ValueError, "reduce must be"),
        (lambda: mdp.ddim_step_with_logprob(scheduler, x, 901, x, eta=1.5), ValueError, "eta must be"),
        (lambda: advantages.clip(torch.zeros(2), 0), ValueError, "adv_clip must be"),
        (lambda: load("parity", "x", classes=["a photo of a doctor"]), ValueError, "at least 2"),
        (lambda: load("imagerewards"), ValueError, "unknown reward 'imagerewards'"),
        (lambda: parse("a cat or a dog"), ValueError, "a cat or a dog"),
        (lambda: ParityReward(lambda im: im, 4, credit="each"), ValueError, "credit must be one of"),
        (lambda: Task("t", ["cat"], lambda *a: None, group_size=0), ValueError, "group_size must be >= 1; got 0"),
        (lambda: Task("t", [], lambda *a: None), ValueError, "empty prompt list"),
    ]


@pytest.mark.parametrize("case", range(13))
def test_the_api_names_bad_input(case):
    fn, error, match = _api_cases()[case]
    with pytest.raises(error, match=match):
        fn()


# --- rewards: a wrong model's folder, corrupt weight files, bad images and info -----------------------------


# --- run folders and resume: --out, torn metrics, the lock, damaged checkpoints, the command line's error net ---


# --- inputs: pretraining data, prompts and prompt files, tasks, sampler and pretraining settings --------------


# --- the practitioner's command line: processes, precision, trackers, evaluation, export ---------------------
