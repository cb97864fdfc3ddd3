"""Periodic evaluation on held-out prompts (`minirl train --eval-every N --eval-prompts ...`, Trainer's eval_prompts):
its images and rewards in the run folder and in the metrics, the same seeds at every evaluation; and the image grids
sent to Accelerate's trackers that take images (a fake TensorBoard here; the real one when it is installed)."""

import json

import pytest
import torch
from accelerate import Accelerator
from accelerate.tracking import GeneralTracker

from helpers import PROMPTS, tiny_policy
from minirl.cli import main
from minirl.rewards import jpeg_compressibility
from minirl.runlog import read_metrics
from minirl.tasks import Task
from minirl.trainer import TrainConfig, Trainer

RUN = ["--prompts", "cat,dog", "--samples-per-epoch", "4", "--sample-batch-size", "4", "--train-batch-size", "4",
       "--steps", "4", "--image-every", "0"]


def test_the_command_line_evaluates_every_n_epochs_and_at_the_end(tiny_sd, tmp_path):
    main(["train", "--pipeline", str(tiny_sd), *RUN, "--epochs", "3", "--eval-every", "2",
          "--eval-prompts", "a red fish,a blue bird,a tree", "--out", str(tmp_path)])
    metrics = read_metrics(tmp_path)
    assert ["eval_reward_mean" in m for m in metrics] == [False, True, True]
    for epoch in (2, 3):
        captions = json.loads((tmp_path / "eval" / f"jpeg_compressibility_epoch{epoch:04d}.json").read_text())
        assert [c["prompt"] for c in captions] == ["a red fish", "a blue bird", "a tree"]
        rewards = torch.tensor([c["reward"] for c in captions])
        assert metrics[epoch - 1]["eval_reward_mean"] == pytest.approx(float(rewards.mean()), rel=1e-6)
        assert (tmp_path / "eval" / f"jpeg_compressibility_epoch{epoch:04d}.png").is_file()
    assert (tmp_path / "reward_curves.png").is_file()


class FakeTensorBoard(GeneralTracker):
    """Accelerate's tracker interface, recording what it is sent."""
    name, requires_logging_directory, main_process_only = "tensorboard", False, True

    def __init__(self):
        super().__init__()
        self.metrics, self.images = [], []

    @property
    def tracker(self):
        return self

    def store_init_configuration(self, values):
        self.config = values

    def log(self, values, step=None, **kwargs):
        self.metrics.append((step, values))

    def log_images(self, values, step=None, **kwargs):
        self.images.append((step, values, kwargs))


def test_evaluations_repeat_their_seeds_and_reach_the_trackers_with_the_grids(tiny_sd, tmp_path):
    tracker = FakeTensorBoard()
    config = TrainConfig(epochs=1, samples_per_epoch=4, sample_batch_size=2, train_batch_size=2, eval_every=1,
                         out=str(tmp_path))
    trainer = Trainer(tiny_policy(tiny_sd), [Task("jpeg", PROMPTS, jpeg_compressibility)], config,
                      accelerator=Accelerator(cpu=True, log_with=[tracker]), eval_prompts={"jpeg": ["a fish"] * 3})
    trainer.train()
    (step, logged), = tracker.metrics
    again = trainer.evaluate()                                       # the same weights: the same images, rewards
    assert step == 1 and all(logged[k] == again[k] for k in ("eval_reward_mean", "eval_reward_std"))
    assert logged["eval_reward_std"] > 0                             # three samples of one prompt, three seeds
    names = {name: (s, pixels, kwargs) for s, values, kwargs in tracker.images for name, pixels in values.items()}
    assert sorted(names) == ["eval/jpeg_epoch0001", "images/jpeg_epoch0001"]
    s, (pixels,), kwargs = names["eval/jpeg_epoch0001"]
    assert s == 1 and kwargs == {"dataformats": "NHWC"} and pixels.dtype.name == "uint8"
    assert pixels.shape == (32 + 2, 3 * 32 + 4, 3)                   # a row of three 32 px images, 1 px apart


def test_the_real_tensorboard_receives_the_image_grids(tiny_sd, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    main(["train", "--pipeline", str(tiny_sd), *RUN, "--epochs", "1", "--image-every", "1", "--tracker", "tensorboard",
          "--out", str(tmp_path)])
    (events,) = [p.parent for p in tmp_path.rglob("events.out.tfevents.*")]
    accumulator = EventAccumulator(str(events), size_guidance={"images": 0})
    accumulator.Reload()
    assert "images/jpeg_compressibility_epoch0001" in accumulator.Tags()["images"]
    assert "reward_mean" in accumulator.Tags()["scalars"]
