"""Bad input, tried as a user would: through the command line and the public API, each is refused before any
sampling (no progress, no metrics), with a message that names the setting, the value and what is valid. The
README's "Bad input" table lists these messages."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minirl.cli import main
from minirl.runlog import read_metrics

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
    (["--resolution", "33"], r"resolution must be a multiple of 2 \(the VAE's factor\) >= 2; got 33"),
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
    (["--prompts", "cat,horse"], r"the prompts of task 'jpeg_compressibility': 2 in the checkpoint, 2 now, the first "
                                 r"difference at #1: 'dog' in the checkpoint, 'horse' now"),
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

def train_with_reward(tiny_sd, out, reward, *extra):
    main(["train", "--pipeline", str(tiny_sd), *RUN, "--out", str(out), "--reward", reward, *extra])


def test_parity_classes_equal_up_to_case_and_spaces_are_refused(tiny_sd, tiny_rewards, tmp_path):
    """CLIP's tokenizer lowercases and splits on whitespace: 'a man' and 'A  MAN' are one class to it."""
    with pytest.raises(SystemExit, match=r"error: classes 'a man' and 'A  MAN' are one class to CLIP \(equal up "
                                         r"to case and spaces\); got \['a man', 'A  MAN', 'a woman'\]"):
        train_with_reward(tiny_sd, tmp_path, f"parity={tiny_rewards['parity']}", "--group-size", "parity=2",
                          "--parity-classes", "a man,A  MAN,a woman")
    assert not (tmp_path / "metrics.jsonl").exists()


@pytest.mark.parametrize("name, other, match", [
    ("pickscore", "clipscore", r"pickscore folder '.*clipscore' holds a CLIP ViT-B/32 \(a tiny random twin of "
                               r"one\); pickscore expects a CLIP ViT-H/14"),
    ("pickscore", "aesthetic", r"pickscore folder '.*aesthetic' holds a CLIP ViT-L/14 \(a tiny random twin of "
                               r"one\); pickscore expects a CLIP ViT-H/14"),
    ("parity", "composition", r"parity folder '.*composition' holds an OWLv2 detector \(config.json: model_type "
                              r"'owlv2'\); parity expects a CLIP \(model_type 'clip'\)"),
    ("composition", "pickscore", r"composition folder '.*pickscore' holds a CLIP \(config.json: model_type "
                                 r"'clip'\); composition expects an OWLv2 detector \(model_type 'owlv2'\)"),
])
def test_a_reward_pointed_at_another_models_folder_is_refused(tiny_sd, tiny_rewards, tmp_path, name, other, match):
    extra = {"parity": ["--group-size", "parity=2"], "composition": ["--prompts", "composition=a cat"]}.get(name, [])
    with pytest.raises(SystemExit, match="error: " + match):
        train_with_reward(tiny_sd, tmp_path, f"{name}={tiny_rewards[other]}", *extra)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_a_clip_of_the_wrong_size_is_refused_before_its_weights_are_read(tmp_path):
    """A real checkpoint's config.json names its architecture: openai/clip-vit-base-patch32 is no PickScore."""
    from safetensors.torch import save_file
    from minirl.rewards import clip, load
    clip.clip_config("ViT-B/32").save_pretrained(tmp_path)
    save_file({"never.read": torch.zeros(1)}, tmp_path / "model.safetensors")  # whole, but no CLIP's weights
    with pytest.raises(ValueError, match=r"holds a CLIP ViT-B/32; pickscore expects a CLIP ViT-H/14"):
        load("pickscore", tmp_path, device="cpu")


def _truncate(file):
    file.write_bytes(file.read_bytes()[:file.stat().st_size // 2])


def _garbage(file):
    file.write_bytes(b"<html>404 Not Found</html>")


@pytest.mark.parametrize("name, file, damage", [
    ("pickscore", "model.safetensors", _truncate),
    ("clipscore", "model.safetensors", _garbage),
    ("parity", "config.json", _truncate),
    ("composition", "config.json", _garbage),
    ("aesthetic", "sac+logos+ava1-l14-linearMSE.pth", _truncate),
    ("hpsv2", "HPS_v2.1_compressed.pt", _garbage),
    ("imagereward", "ImageReward.pt", _truncate),
    ("imagereward", "med_config.json", _truncate),
])
def test_a_corrupt_or_incomplete_reward_file_is_named(tiny_rewards, tmp_path, name, file, damage):
    from minirl.rewards import load
    folder = shutil.copytree(tiny_rewards[name], tmp_path / name)
    damage(folder / file)
    with pytest.raises(ValueError, match=rf"^{name}: '.*{re.escape(file)}' is corrupt or incomplete \(\w+: .+\); "
                                         rf"fetch or copy it again$") as error:
        load(name, folder, device="cpu")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("reward", ["jpeg_compressibility", "jpeg_incompressibility", "pickscore", "parity"])
@pytest.mark.parametrize("images, match", [
    (lambda: torch.full((2, 3, 32, 32), float("nan")), r"got non-finite pixels \(nan or inf\) in the images at "
                                                       r"batch positions \[0, 1\]; images must be finite, in \[0, 1\]"),
    (lambda: torch.rand(2, 3, 32, 32) * 2 - 1, r"takes images in \[0, 1\]; got values in \[-1.00, 1.00\] \(images "
                                              r"in \[-1, 1\]: pass \(images \+ 1\) / 2\)"),
    (lambda: torch.rand(2, 32, 32, 3).numpy(), r"takes images as a \(B, 3, H, W\) float torch.Tensor in \[0, 1\]; "
                                              r"got a numpy.ndarray"),
], ids=["nan", "[-1, 1]", "numpy"])
def test_bad_images_are_refused_by_every_reward(tiny_rewards, reward, images, match):
    from minirl.rewards import load
    fn = load(reward, tiny_rewards[reward], device="cpu") if reward in tiny_rewards else load(reward)
    with pytest.raises(ValueError, match=rf"^{reward} " + match):
        fn(images(), ["a cat", "a dog"], [{}, {}])


@pytest.mark.parametrize("info, error, match", [
    (None, TypeError, r"info of type NoneType"),
    ({"a": "x"}, TypeError, r"info\['a'\] = 'x'"),
    ({"a": torch.ones(2)}, TypeError, r"info\['a'\], a tensor of shape \(2,\)"),
    ({"a": float("nan")}, ValueError, r"info\['a'\] = nan"),
    ({1: 0.5}, TypeError, r"info key 1, which is not a str"),
])
def test_a_rewards_info_is_validated(info, error, match):
    from minirl.rewards import validate
    validate("mine", (torch.zeros(2), {"a": 1, "b": torch.tensor(0.5), "c": True}), 2)  # numbers, 0-d tensors
    with pytest.raises(error, match=r"^reward 'mine' returned " + match + r"; info must be a dict of names \(str\) "
                                    r"to finite numbers \(floats, ints or one-element tensors\)$"):
        validate("mine", (torch.zeros(2), info), 2)


# --- run folders and resume: --out, torn metrics, the lock, damaged checkpoints, the command line's error net ---

def _train(tiny_sd, out, *extra):
    main(["train", "--pipeline", str(tiny_sd), *RUN, "--out", str(out), *extra])


def _copy(run, tmp_path):
    """A copy of a finished run, to damage or resume without touching the module's run."""
    return Path(shutil.copytree(run, tmp_path / "copy", ignore=shutil.ignore_patterns(".lock")))


def _refused_before_sampling(capsys, out, files):
    """Nothing sampled, and the folder's files as they were (`files`: {name: bytes} before the command)."""
    printed = capsys.readouterr()
    assert "estimated epoch time" not in printed.out and "epochs:" not in printed.err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == files


def _files(out):
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


def test_a_new_run_is_refused_in_a_folder_that_holds_a_run(tiny_sd, finished_run, capsys):
    before = _files(finished_run)
    with pytest.raises(SystemExit, match=r"--out '.*' already holds a run; continue it with --resume, replace it "
                                         r"with --overwrite, or give another --out"):
        _train(tiny_sd, finished_run)
    _refused_before_sampling(capsys, finished_run, before)


@pytest.mark.parametrize("flags", [[], ["--overwrite"]])
def test_a_new_run_is_refused_in_a_folder_that_holds_other_files(tiny_sd, tmp_path, capsys, flags):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match=r"--out '.*' is not empty and holds no run \(it holds 'notes.txt'\); "
                                         r"give a new or empty folder"):
        _train(tiny_sd, tmp_path, *flags)
    _refused_before_sampling(capsys, tmp_path, {"notes.txt": b"mine"})


@pytest.mark.parametrize("flags", [[], ["--overwrite"], ["--resume"]])
def test_a_model_folder_is_never_written_into(tiny_sd, tmp_path, capsys, flags):
    """`--out mypipe/unet`: its config.json is a model's; a run would replace it and the model would not load."""
    unet = Path(shutil.copytree(tiny_sd / "unet", tmp_path / "unet"))
    before = _files(unet)
    with pytest.raises(SystemExit, match=r"--out '.*unet' holds a config.json that is not a minirl run's \(a "
                                         r"model's folder\?\); give a new or empty folder"):
        _train(tiny_sd, unet, *flags)
    _refused_before_sampling(capsys, unet, before)


def test_overwrite_replaces_a_run_whole(tiny_sd, tmp_path):
    """--overwrite: the old run's checkpoints, images and metrics go, so nothing of the two runs mixes (prune
    kept the old run's higher-numbered checkpoint and deleted the new run's)."""
    out = tmp_path / "run"
    _train(tiny_sd, out, "--epochs", "2", "--image-every", "1")
    (out / "notes.txt").write_text("mine")
    _train(tiny_sd, out, "--overwrite", "--seed", "1")
    assert [m["epoch"] for m in read_metrics(out)] == [1]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_0001", "latest"]
    assert not (out / "images").exists() and (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "config.json").read_text())["config"]["seed"] == 1
    assert [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != ".lock"] == []


@pytest.mark.parametrize("where, match", [
    ("file", r"--out '.*' is a file; give a folder"),
    ("under a file", r"--out '.*' is under '.*file', which is a file; give a folder"),
    ("read-only", r"--out '/proc/sys/minirl-run' cannot be written: '/proc/sys' is not writable \(a read-only file "
                  r"system or no permission\); give a folder you can write to"),
])
def test_an_out_that_cannot_be_a_run_folder_is_named(tiny_sd, tmp_path, capsys, where, match):
    if where == "read-only" and not Path("/proc/sys").is_dir():
        pytest.skip("needs Linux's /proc/sys (not writable, even by root)")
    (tmp_path / "file").write_text("")
    out = {"file": tmp_path / "file", "under a file": tmp_path / "file" / "run",
           "read-only": Path("/proc/sys/minirl-run")}[where]
    with pytest.raises(SystemExit, match=match):
        _train(tiny_sd, out)
    _refused_before_sampling(capsys, tmp_path, {"file": b""})


def test_resume_and_overwrite_together_are_refused(tiny_sd, finished_run):
    with pytest.raises(SystemExit, match=r"--resume continues the run in --out and --overwrite replaces it; give "
                                         r"one of them"):
        _train(tiny_sd, finished_run, "--resume", "--overwrite")


def test_resume_accepts_the_same_run_however_written(tiny_sd, finished_run, monkeypatch):
    """Relative or absolute paths, a trailing slash, spaces after the commas: the same run."""
    monkeypatch.chdir(finished_run.parent)
    run = [a.replace("cat,dog", "cat, dog") for a in RUN]
    main(["train", "--pipeline", os.path.relpath(tiny_sd) + "/", *run, "--out", finished_run.name + "/", "--resume"])


@pytest.fixture(scope="module")
def file_run(tiny_sd, tmp_path_factory):
    """A finished run whose prompts come from a file."""
    out = tmp_path_factory.mktemp("file-run")
    (out.parent / "prompts.txt").write_text("cat\ndog\n")
    main(["train", "--pipeline", str(tiny_sd), *RUN, "--prompts", f"@{out.parent / 'prompts.txt'}", "--out", str(out)])
    return out


def test_resume_refuses_an_edited_prompts_file(tiny_sd, file_run, capsys):
    prompts = file_run.parent / "prompts.txt"
    prompts.write_text("cat\nhorse\n")
    with pytest.raises(SystemExit, match=r"cannot resume .*: the run it continues was defined differently \(the "
                                         r"prompts of task 'jpeg_compressibility': 2 in the checkpoint, 2 now, the "
                                         r"first difference at #1: 'dog' in the checkpoint, 'horse' now\)"):
        main(["train", "--pipeline", str(tiny_sd), *RUN, "--prompts", f"@{prompts}", "--out", str(file_run),
              "--resume", "--epochs", "2"])
    assert "estimated epoch time" not in capsys.readouterr().out


def test_a_resumed_run_past_its_epochs_says_so(tiny_sd, finished_run, capsys):
    _train(tiny_sd, finished_run, "--resume", "--epochs", "1")
    assert re.search(r"the run in .* has [12] epochs already; raise --epochs to continue it", capsys.readouterr().out)


def test_a_second_writer_is_refused_and_a_dead_ones_lock_is_not(tiny_sd, finished_run, tmp_path):
    """A process holds the run folder's lock (as a run would): a second `--resume` is refused in one line, naming
    it. Killed (a crash, kill -9), its lock is gone with it: the next resume runs."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(finished_run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(SystemExit, match=rf"run folder '.*' is in use by process {holder.pid}: one process "
                                             r"writes a run at a time; wait for it to end, or give another folder"):
            _train(tiny_sd, finished_run, "--resume", "--epochs", "1")
    finally:
        holder.kill()
        holder.wait()
    _train(tiny_sd, finished_run, "--resume", "--epochs", "1")


HOLD_LOCK = """
import fcntl, os, sys, time
f = open(os.path.join(sys.argv[1], ".lock"), "a+")
fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
f.truncate(0); f.write(f"{os.getpid()}\\n"); f.flush()
print("holding", flush=True)
time.sleep(600)
"""


def _set_epoch(folder, value):
    """Write `value` as the checkpoint's epoch in its state.json, as a hand edit or a damaged write would."""
    path = folder / "state.json"
    document = json.loads(path.read_text())
    tree = document.get("state", document)
    for pair in tree["__dict__"]:
        if pair[0] == "epoch":
            pair[1] = value
    path.write_text(json.dumps(document))


def test_a_checkpoint_with_a_wrong_type_is_named(tiny_sd, finished_run, tmp_path):
    out = _copy(finished_run, tmp_path)
    for folder in (out / "checkpoints").iterdir():
        if folder.is_dir():
            _set_epoch(folder, "1")
    with pytest.raises(SystemExit, match=r"no complete checkpoint under '.*checkpoints': checkpoint '.*epoch_000\d' is "
                                         r"damaged: state.json: 'epoch' is a str, expected an int.*; start the run "
                                         r"again with --overwrite, or restore a checkpoint"):
        _train(tiny_sd, out, "--resume", "--epochs", "3")


def test_an_empty_metrics_file_is_named(tiny_sd, finished_run, tmp_path, capsys):
    out = _copy(finished_run, tmp_path)
    (out / "metrics.jsonl").write_text("")
    with pytest.raises(SystemExit, match=r"metrics file '.*metrics.jsonl' is damaged: it holds 0 epochs, and the "
                                         r"checkpoint is at epoch [12]; restore it, or start the run again with "
                                         r"--overwrite"):
        _train(tiny_sd, out, "--resume", "--epochs", "3")
    assert "estimated epoch time" not in capsys.readouterr().out


def test_a_torn_metrics_line_past_the_checkpoint_is_dropped(tiny_sd, finished_run, tmp_path):
    """A full disk or a power loss tears the last line (written before its epoch's checkpoint): the resume drops
    it with the other lines past the checkpoint. A torn line before the checkpoint is damage, named."""
    out = _copy(finished_run, tmp_path)
    lines = (out / "metrics.jsonl").read_text()
    epochs = len(lines.splitlines())
    (out / "metrics.jsonl").write_text(lines + '{"epoch": 9, "reward_me')
    _train(tiny_sd, out, "--resume", "--epochs", "1")
    assert (out / "metrics.jsonl").read_text() == lines
    (out / "metrics.jsonl").write_text('{"epoch": 1, "rew\n' + lines)
    with pytest.raises(SystemExit, match=rf"metrics file '.*metrics.jsonl' is damaged at line 1 \('{{\"epoch\": 1, "
                                         rf"\"rew'\), before the checkpoint's epoch {epochs}; restore it"):
        _train(tiny_sd, out, "--resume", "--epochs", "1")


def test_ctrl_c_says_how_to_resume(tiny_sd, finished_run, tmp_path, monkeypatch, capsys):
    """Ctrl-C in `train`: one line with the command that continues the run (the same one with --resume), or,
    before the first checkpoint, that starts it again; exit status 130, no traceback."""
    from minirl.trainer import Trainer

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "learn", interrupt)
    out = _copy(finished_run, tmp_path)
    with pytest.raises(SystemExit) as stop:
        _train(tiny_sd, out, "--resume", "--epochs", "3")
    assert stop.value.code == 130
    command = f"minirl train --pipeline {tiny_sd} {' '.join(RUN)} --out {out} --epochs 3 --resume"
    assert capsys.readouterr().err.splitlines()[-1] == f"interrupted; continue the run with: {command}"
    with pytest.raises(SystemExit):
        _train(tiny_sd, tmp_path / "new", "--seed", "3")
    command = f"minirl train --pipeline {tiny_sd} {' '.join(RUN)} --out {tmp_path / 'new'} --seed 3 --overwrite"
    assert capsys.readouterr().err.splitlines()[-1] == f"interrupted before the run's first checkpoint; start it " \
                                                       f"again with: {command}"


def test_a_full_disk_is_one_line_naming_the_file(tiny_sd, tmp_path, monkeypatch):
    import errno

    from minirl import checkpoint

    def full(state, root, name):
        raise OSError(errno.ENOSPC, "No space left on device", str(root / name))

    monkeypatch.setattr(checkpoint, "save_state", full)
    with pytest.raises(SystemExit, match=r"^error: \[Errno 28\] No space left on device: '.*checkpoints/epoch_0001'$"):
        _train(tiny_sd, tmp_path)


def test_a_reward_failing_inside_a_run_is_named(tiny_sd, tmp_path):
    """A ValueError from inside a reward (its own check of a prompt, say) names the reward."""
    from helpers import tiny_trainer

    def picky(images, prompts, metadata):
        raise ValueError("cannot read the prompt 'cat'")

    with pytest.raises(ValueError, match=r"^reward 'jpeg' failed: cannot read the prompt 'cat'$"):
        tiny_trainer(tiny_sd, tmp_path, reward=picky).train()



# --- inputs: pretraining data, prompts and prompt files, tasks, sampler and pretraining settings --------------

def _train_refused(capsys, pipeline, out, *extra, match):
    """`minirl train` on `pipeline` with RUN and `extra` stops with `match` in its one-line error before any
    sampling."""
    with pytest.raises(SystemExit, match=match):
        main(["train", "--pipeline", str(pipeline), *RUN, "--out", str(out), *extra])
    printed = capsys.readouterr()
    assert "estimated epoch time" not in printed.out and "epochs:" not in printed.err


def test_a_prompts_file_that_is_not_utf8_is_named(tiny_sd, tmp_path, capsys):
    (tmp_path / "prompts.txt").write_bytes("a cat\nun café\n".encode("latin-1"))
    _train_refused(capsys, tiny_sd, tmp_path / "run", "--prompts", f"@{tmp_path / 'prompts.txt'}",
                   match=r"prompts.txt line 2 is not UTF-8 \(byte 0xe9\)")


def test_a_byte_order_mark_is_not_part_of_the_first_prompt(tmp_path):
    from minirl.cli import read_prompts
    (tmp_path / "prompts.txt").write_bytes(b"\xef\xbb\xbfa cat\r\na dog\r\n")  # UTF-8 as Windows' Notepad saves it
    assert read_prompts(f"@{tmp_path / 'prompts.txt'}") == ["a cat", "a dog"]


def test_a_prompt_longer_than_the_text_encoder_reads_is_refused(tiny_sd, tmp_path, capsys):
    """CLIP reads 77 tokens, start and end included: the rest of a prompt would be cut off unseen by the policy
    while the reward reads it whole."""
    long = "a photo of a cat " * 20 + "and a dog"                    # 5 x 20 + 3 words, + start and end: 105
    _train_refused(capsys, tiny_sd, tmp_path, "--prompts", f"a cat,{long}",
                   match=r"task 'jpeg_compressibility': 1 of 2 prompts are longer than the text encoder reads \(77 "
                         r"tokens, start and end included\), e.g. 'a photo of a cat .*' \(105 tokens\); shorten them")


def test_the_prompt_length_limit_is_the_tokenizers(tiny_sd):
    from transformers import CLIPTokenizer
    from minirl.tasks import Task
    tokenizer = CLIPTokenizer.from_pretrained(tiny_sd / "tokenizer")
    Task("t", ["cat " * 75], lambda *a: None).check_prompt_lengths(tokenizer)    # 77 tokens: read whole
    with pytest.raises(ValueError, match=r"1 of 1 prompts .* \(78 tokens\)"):
        Task("t", ["cat " * 76], lambda *a: None).check_prompt_lengths(tokenizer)


@pytest.mark.parametrize("advantages", ["batch", "per_prompt"])
def test_one_reward_an_epoch_is_refused(tiny_sd, tmp_path, capsys, advantages):
    """Advantages standardise an epoch's rewards: one reward alone gives 0 (per_prompt: while no prompt has a
    history of its own), and the run would train on nothing."""
    _train_refused(capsys, tiny_sd, tmp_path, "--samples-per-epoch", "1", "--sample-batch-size", "1",
                   "--train-batch-size", "1", "--advantages", advantages,
                   match=rf"task 'jpeg_compressibility': samples_per_epoch=1 is one sample, and advantages="
                         rf"'{advantages}' .* every advantage would be 0; valid: samples_per_epoch >= 2")


def _distribution(credit=None):
    """A distribution reward (never called here), crediting groups as `credit` says (None: no such attribute)."""
    def reward(images, prompts, metadata):
        return None
    reward.distribution = True
    if credit:
        reward.credit = credit
    return reward


@pytest.mark.parametrize("credit, mode, samples, match", [
    (None, "batch", 8, r"task 't': samples_per_epoch=8 is one group of 8, which its distribution reward scores with "
                       r"one value, and advantages='batch' .* valid: samples_per_epoch >= 16"),
    (None, "per_prompt", 8, r"samples_per_epoch=8 is one group of 8, .* valid: samples_per_epoch >= 16"),
    ("group", "group", 16, r"task 't': its distribution reward gives every sample of a group one value, so "
                           r"advantages='group' \(within each group\) would be 0"),
    (None, "batch", 16, None),                                      # two groups: two values to compare
    ("leave_one_out", "group", 8, None),                            # a value of each sample's own
    ("leave_one_out", "batch", 8, None),
])
def test_a_distribution_reward_needs_two_values_to_compare(credit, mode, samples, match):
    from minirl.tasks import Task
    task = Task("t", ["a doctor"], _distribution(credit), group_size=8)
    if match is None:
        task.check_advantages(mode, samples)
    else:
        with pytest.raises(ValueError, match=match):
            task.check_advantages(mode, samples)


def test_the_paper_runs_parity_task_is_refused_with_one_group_an_epoch(tiny_sd, tiny_rewards, tmp_path, capsys):
    """ParityReward's credit="group" (the paper's) gives a group one value: one group an epoch, no signal."""
    _train_refused(capsys, tiny_sd, tmp_path, "--reward", f"parity={tiny_rewards['parity']}", "--group-size", "4",
                   "--prompts", "a photo of a nurse", match=r"task 'parity': samples_per_epoch=4 is one group of 4")


@pytest.mark.parametrize("prompts, match", [
    ("a cat", r"task 't': prompts must be a list of prompts or a function rng -> \(prompt, metadata\); got the str "
              r"'a cat', which would be drawn one character at a time; pass \['a cat'\]"),
    (["a cat", None], r"task 't': prompt #1 is None; every prompt must be a str"),
])
def test_a_task_refuses_prompts_that_are_not_a_list_of_str(prompts, match):
    from minirl.tasks import Task
    with pytest.raises(TypeError, match=match):
        Task("t", prompts, lambda *a: None)


def test_eta_with_ddpm_is_refused_and_a_ddpm_run_records_eta_none(tiny_sd, tmp_path, capsys):
    """DDPM's step has its own variance (DDIM's at eta = 1): an --eta would be recorded but never used."""
    _train_refused(capsys, tiny_sd, tmp_path / "eta", "--scheduler", "ddpm", "--eta", "0.3",
                   match=r"--eta is DDIM's noise; a ddpm run's step has its own variance \(DDIM's at eta 1\): leave "
                         r"--eta out")
    main(["train", "--pipeline", str(tiny_sd), *RUN, "--out", str(tmp_path / "run"), "--scheduler", "ddpm"])
    assert json.loads((tmp_path / "run" / "config.json").read_text())["run"]["eta"] is None


@pytest.fixture(scope="module")
def sd3_folder(tmp_path_factory):
    from minirl.sd import make_tiny_sd3
    return make_tiny_sd3(tmp_path_factory.mktemp("sd3") / "sd3", sample_size=16)


def test_eta_on_a_flow_pipeline_is_refused(sd3_folder, tmp_path, capsys):
    """Symmetric with --noise-level on DDIM: the flow SDE's noise is --noise-level."""
    _train_refused(capsys, sd3_folder, tmp_path, "--eta", "0.5",
                   match=r"--eta is DDIM's noise; a flow run's is --noise-level")


def test_truncated_pretraining_image_is_named_before_sampling(tiny_sd, tmp_path, capsys):
    from PIL import Image
    folder = tmp_path / "data"
    folder.mkdir()
    Image.effect_noise((64, 64), 64).convert("RGB").save(folder / "0.jpg")
    (folder / "0.jpg").write_bytes((folder / "0.jpg").read_bytes()[:-300])
    (folder / "0.txt").write_text("a cat")
    _train_refused(capsys, tiny_sd, tmp_path / "run", "--pretrain-data", str(folder),
                   match=r"--pretrain-data: cannot read image '.*0.jpg' \(image file is truncated")


@pytest.mark.parametrize("extra, match", [
    (["--steps", "0"], r"steps must be an int >= 1; got 0"),
    (["--ema", "2"], r"ema must be a finite number >= 0 and < 1 \(at 1 the saved average stays the initial "
                     r"weights\); got 2.0"),
    (["--ema", "1"], r"ema must be a finite number >= 0 and < 1"),
    (["--ema", "nan"], r"ema must be a finite number >= 0 and < 1"),
    (["--warmup", "0"], r"warmup must be an int >= 1; got 0"),
    (["--save-every", "0"], r"save_every must be an int >= 1; got 0"),
    (["--batch-size", "0"], r"batch_size must be an int >= 1; got 0"),
    (["--lr", "-1"], r"lr must be a finite number > 0; got -1.0"),
    (["--caption-dropout", "1.5"], r"caption_dropout must be a finite number >= 0 and <= 1; got 1.5"),
    (["--bias", "-0.1"], r"bias must be a finite number >= 0 and <= 1; got -0.1"),
    (["--size", "10"], r"size must be a multiple of 4 >= 8 \(the UNet halves it twice\); got 10"),
])
def test_pretraining_settings_are_checked_before_anything_is_written(tmp_path, extra, match):
    out = tmp_path / "pretrain"
    with pytest.raises(SystemExit, match=match):  # one step of 2 scenes, were the setting let through
        main(["pretrain", "--out", str(out), "--steps", "1", "--batch-size", "2", *extra])
    assert not out.exists()


@pytest.mark.parametrize("extra, match", [
    (["--detector-steps", "0"], r"detector_steps must be an int >= 1; got 0"),
    (["--preference-steps", "-3"], r"preference_steps must be an int >= 1; got -3"),
])
def test_judges_with_no_training_step_are_refused(tmp_path, extra, match):
    out = tmp_path / "judges"
    with pytest.raises(SystemExit, match=match):
        main(["train-judges", "--out", str(out), "--detector-steps", "1", "--preference-steps", "1", *extra])
    assert not out.exists()


# --- the practitioner's command line: processes, precision, trackers, evaluation, export ---------------------

PRACTITIONER_CASES = [  # (extra arguments of `minirl train`, what the message must say)
    (["--tracker", "tensorbored"], r"--tracker 'tensorbored' is not one of Accelerate's trackers: all, aim, "),
    (["--eval-every", "2"], r"--eval-every N and --eval-prompts go together .*got --eval-every 2 and no "
                            r"--eval-prompts"),
    (["--eval-prompts", "a fish"], r"--eval-every N and --eval-prompts go together .*got --eval-every 0 and "
                                   r"--eval-prompts"),
    (["--eval-every", "-1", "--eval-prompts", "a fish"], r"--eval-every must be an int >= 0; got -1"),
    (["--eval-every", "1", "--eval-prompts", "jpegs=a fish"], r"--eval-prompts 'jpegs=a fish' names task 'jpegs'"),
    (["--eval-every", "1", "--eval-prompts", ",,"], r"--prompts ',,' holds no prompt"),
    (["--keep-checkpoints", "0"], r"keep_checkpoints must be an int >= 1; got 0"),
]


@pytest.mark.parametrize("extra, match", PRACTITIONER_CASES, ids=[" ".join(c[0]) for c in PRACTITIONER_CASES])
def test_the_practitioners_flags_are_checked_before_sampling(tiny_sd, tmp_path, capsys, extra, match):
    _train_refused(capsys, tiny_sd, tmp_path / "run", *extra, match=match)


@pytest.mark.parametrize("tracker", ["tensorboard", "wandb"])
def test_a_tracker_whose_package_is_missing_is_refused(tiny_sd, tmp_path, capsys, tracker):
    """Accelerate would drop it without a word, and the run would log nothing to it."""
    from accelerate.tracking import get_available_trackers
    if tracker in [t.value for t in get_available_trackers()]:
        pytest.skip(f"{tracker} is installed")
    _train_refused(capsys, tiny_sd, tmp_path / "run", "--tracker", tracker,
                   match=rf"--tracker {tracker} needs the package {tracker}, which is not installed: pip install {tracker}")


@pytest.mark.parametrize("command, extra, match", [
    ("sample", ["--run", "no/such/run", "--prompts", "a cat"], r"--run 'no/such/run' holds no config.json"),
    ("export", ["--run", "no/such/run"], r"--run 'no/such/run' holds no config.json"),
    ("sample", ["--run", "RUN", "--prompts", "a cat", "--images-per-prompt", "0"],
     r"--images-per-prompt must be an int >= 1; got 0"),
    ("export", ["--run", "RUN", "--out", "RUN"], r"--out '.*' is not an empty folder; give a new or empty one"),
    ("export", ["--run", "RUN", "--checkpoint", "RUN/checkpoints/epoch_0007"], r"no checkpoint in '.*epoch_0007'"),
])
def test_sample_and_export_name_bad_input(finished_run, tmp_path, capsys, command, extra, match):
    extra = [a.replace("RUN", str(finished_run)) for a in extra]
    out = [] if "--out" in extra else ["--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit, match=match):
        main([command, *extra, *out])
    assert not (tmp_path / "out").exists()
