"""The start-of-run estimate (minirl.cost): every kind of work an epoch does is timed and counted (the KL term's
reference passes and the L_pre step included), and its memory counts the denoising chains an epoch keeps."""

import math

import pytest
import torch

from helpers import PROMPTS, tiny_policy, trainable
from minirl import cost
from minirl.rewards import jpeg_compressibility
from minirl.tasks import Task
from minirl.trainer import TrainConfig, Trainer


def pretrain_data(generator):
    return torch.rand(2, 3, 32, 32, generator=generator), ["a cat", "a dog"]


@pytest.fixture
def trainer(tiny_sd, tmp_path):
    """6 DDIM steps, 2 of a chain trained, 8 samples in batches of 4, 2 inner epochs, the KL term and L_pre."""
    config = TrainConfig(samples_per_epoch=8, sample_batch_size=4, train_batch_size=4, train_micro_batch=2,
                         inner_epochs=2, timestep_fraction=0.5, kl_weight=0.01, pretrain_beta=1.0, out=str(tmp_path))
    return Trainer(tiny_policy(tiny_sd), [Task("jpeg", PROMPTS, jpeg_compressibility)], config,
                   pretrain_data=pretrain_data)


def test_epoch_seconds_counts_every_kind_of_work(trainer):
    seconds = {"step": 1.0, "decode": 10.0, "reward": [100.0], "train": 1000.0, "reference": 10_000.0,
               "pretrain": 100_000.0}
    # 2 sample batches of 6 steps and a decode and a reward each; 8 samples x 2 inner epochs x 2 timesteps = 32
    # transitions in micro batches of 2: 16 training passes and 16 reference passes; one L_pre step
    assert trainer.n_train == 2
    assert cost.epoch_seconds(trainer, seconds) == 2 * (6 + 10 + 100) + 16 * (1000 + 10_000) + 100_000


def test_the_probe_times_the_reference_and_the_pretraining_step_and_changes_nothing(trainer):
    weights, rng = trainable(trainer), torch.get_rng_state()
    seconds, chain = cost.probe(trainer)
    assert seconds["reference"] > 0 and seconds["pretrain"] > 0 and seconds["train"] > 0
    assert all(torch.equal(weights[n], w) for n, w in trainable(trainer).items())
    assert torch.equal(rng, torch.get_rng_state())
    assert not trainer.optimizer.state and all(p.grad is None for p in trainer.params)
    # one sample's chain: x_T .. x_0 (7 latents of 4 x 16 x 16, fp32), 6 log-probs, its prompt's 77 x 32 embedding
    assert chain == 7 * 4 * 16 * 16 * 4 + 6 * 4 + 77 * 32 * 4


def test_the_estimate_names_the_reference_passes_the_pretraining_step_and_the_chains(trainer):
    time_line, memory_line = cost.estimate(trainer)
    assert "16 training passes" in time_line and "as many KL reference passes of" in time_line
    assert "then an L_pre step of" in time_line
    chains = 8 * (7 * 4 * 16 * 16 * 4 + 6 * 4 + 77 * 32 * 4)
    assert f"the 8 chains an epoch keeps ({chains / 2**30:.2f} GiB)" in memory_line
    assert math.isfinite(float(time_line.split(": ")[1].split(" s")[0]))
