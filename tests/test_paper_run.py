"""The paper's system end to end on the tiny pipeline: `minirl train --preset paper` with the three tasks
(ImageReward, skin-tone parity over groups, composition), each on its own prompts, and the L_pre step on a
folder of captioned images; and every bad input of that command named before any sampling."""

import json
import shutil

import numpy as np
import pytest
from diffusers import UNet2DConditionModel
from PIL import Image

from minirl.cli import main
from minirl.runlog import read_metrics


@pytest.fixture(scope="module")
def pretrain_folder(tmp_path_factory):
    """Six captioned 40x48 images in Hugging Face's ImageFolder layout (metadata.jsonl)."""
    folder = tmp_path_factory.mktemp("pretrain")
    rng = np.random.default_rng(0)
    lines = []
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        lines.append(json.dumps({"file_name": f"{i}.png", "text": f"a photo of scene {i}"}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def paper_args(tiny_sd, tiny_rewards, out, *extra):
    return ["train", "--preset", "paper", "--pipeline", str(tiny_sd), "--mixed-precision", "no",
            "--reward", ",".join(f"{n}={tiny_rewards[n]}" for n in ("imagereward", "parity", "composition")),
            "--epochs", "1", "--samples-per-epoch", "8", "--sample-batch-size", "8", "--train-batch-size", "4",
            "--train-micro-batch", "0", "--steps", "4", "--group-size", "parity=4", "--out", str(out), *extra]


def test_the_paper_run_trains_three_tasks_and_l_pre(tiny_sd, tiny_rewards, pretrain_folder, tmp_path, capsys):
    out = tmp_path / "run"
    main(paper_args(tiny_sd, tiny_rewards, out, "--pretrain-data", str(pretrain_folder)))
    printed = capsys.readouterr().out
    assert "tasks ['imagereward', 'parity', 'composition']" in printed
    assert "estimated epoch time on cpu" in printed and "GiB of weights" in printed
    unet = sum(p.numel() for p in UNet2DConditionModel.from_pretrained(tiny_sd, subfolder="unet").parameters())
    assert f"({unet:,} trainable parameters)" in printed                # the full UNet, not "0.0M"
    (m,) = read_metrics(out)
    for task in ("imagereward", "parity", "composition"):
        assert f"{task}/reward_mean" in m and f"{task}/approx_kl" in m
    assert 0 <= m["parity/statistical_parity"] <= 0.75                  # groups of 4 over 4 skin-tone classes
    shares = [v for k, v in m.items() if k.startswith("parity/share/")]
    assert len(shares) == 4 and sum(shares) == pytest.approx(1.0)
    assert 0 <= m["composition/success"] <= 1
    assert m["pretrain_loss"] > 0 and "pretrain_grad_norm" in m           # Algorithm 1's L_pre step ran
    config = json.loads((out / "config.json").read_text())["config"]
    assert (config["lr"], config["adv_clip"], config["timestep_fraction"]) == (2e-6, 10.0, 0.105)  # the preset's
    assert (out / "reward_curves.png").is_file()
    grids = {p.name for p in (out / "images").glob("*.png")}
    assert grids == {f"{t}_epoch0001.png" for t in ("imagereward", "parity", "composition")}
    prompts = {t: json.loads((out / "images" / f"{t}_epoch0001.json").read_text())[0]["prompt"]
               for t in ("parity", "composition")}
    assert prompts["parity"].startswith("a photo of a") and prompts["parity"] in open(
        "assets/prompts/occupations.txt").read()                          # each task draws its own prompts
    assert prompts["composition"] in open("assets/prompts/composition.txt").read()


def test_each_task_takes_its_own_prompts(tiny_sd, tiny_rewards, tmp_path):
    out = tmp_path / "run"
    main(paper_args(tiny_sd, tiny_rewards, out, "--prompts", "imagereward=a red fox,a castle",
                    "--prompts", "composition=two cups", "--prompts", "parity=a photo of a nurse"))
    prompts = {t: {c["prompt"] for c in json.loads((out / "images" / f"{t}_epoch0001.json").read_text())}
               for t in ("imagereward", "parity", "composition")}
    assert prompts["imagereward"] <= {"a red fox", "a castle"}
    assert prompts["composition"] == {"two cups"} and prompts["parity"] == {"a photo of a nurse"}


def _missing_caption(folder):
    (folder / "metadata.jsonl").unlink()
    (folder / "0.txt").write_text("a caption")


def _empty_caption(folder):
    (folder / "metadata.jsonl").write_text(json.dumps({"file_name": "0.png", "text": " "}) + "\n")


def _unreadable(folder):
    (folder / "0.png").write_bytes(b"not an image")


def _empty(folder):
    for p in folder.iterdir():
        p.unlink()


@pytest.mark.parametrize("break_folder, match", [
    (_missing_caption, r"5 image\(s\) have no caption file, e.g. \['1.png'"),
    (_empty_caption, "the caption in line 1 of metadata.jsonl is empty"),
    (_unreadable, "cannot read image .*0.png"),
    (_empty, "holds no image"),
])
def test_bad_pretraining_data_is_named_before_sampling(tiny_sd, tiny_rewards, pretrain_folder, tmp_path, capsys,
                                                     break_folder, match):
    folder = tmp_path / "data"
    shutil.copytree(pretrain_folder, folder)
    break_folder(folder)
    with pytest.raises(SystemExit, match=match):
        main(paper_args(tiny_sd, tiny_rewards, tmp_path / "run", "--pretrain-data", str(folder)))
    assert "estimated epoch time" not in capsys.readouterr().out           # nothing was sampled


@pytest.mark.parametrize("extra, match", [
    (["--reward", "imagereward,pickscores"], "unknown reward 'pickscores' in --reward"),
    (["--prompts", "composition=a cat or a dog"], "a cat or a dog"),
    (["--parity-classes", "a photo of a doctor"], "at least 2"),
    (["--group-size", "parity=3"], "--sample-batch-size 8 is not a multiple of --group-size 3"),
    (["--group-size", "parity=1"], "--group-size must be >= 2 for it"),
    (["--prompts", "compositions=two cups"], "names task 'compositions', which is not one of this run's"),
])
def test_bad_paper_run_arguments_are_named_before_sampling(tiny_sd, tiny_rewards, tmp_path, capsys, extra, match):
    with pytest.raises(SystemExit, match=match):
        main(paper_args(tiny_sd, tiny_rewards, tmp_path / "run", *extra))
    assert "estimated epoch time" not in capsys.readouterr().out


def test_a_reward_folder_missing_a_file_is_named(tiny_sd, tiny_rewards, tmp_path):
    folder = tmp_path / "imagereward"
    shutil.copytree(tiny_rewards["imagereward"], folder)
    (folder / "med_config.json").unlink()
    with pytest.raises(SystemExit, match="imagereward folder .* is missing med_config.json"):
        main(paper_args(tiny_sd, {**tiny_rewards, "imagereward": folder}, tmp_path / "run"))


def test_an_unknown_preset_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--preset", "papers", "--out", str(tmp_path)])
    assert "invalid choice: 'papers'" in capsys.readouterr().err


def test_bf16_on_a_cpu_that_cannot_run_it_is_refused(tiny_sd, tiny_rewards, tmp_path, monkeypatch):
    import torch

    def no_bf16(*args, **kwargs):
        raise RuntimeError("\"slow_conv2d_cpu\" not implemented for 'BFloat16'")

    monkeypatch.setattr(torch.nn.functional, "conv2d", no_bf16)
    with pytest.raises(SystemExit, match="bfloat16 was requested on cpu, which cannot run it"):
        main(paper_args(tiny_sd, tiny_rewards, tmp_path / "run", "--mixed-precision", "bf16"))
