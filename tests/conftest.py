import os

os.environ["HF_HUB_OFFLINE"] = "1"  # an accidental download fails at once

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory):
    """A tiny random SD pipeline folder with 16x16 latents (32 px images), loaded by from_pretrained."""
    from minirl.sd import make_tiny_sd
    return make_tiny_sd(tmp_path_factory.mktemp("tiny-sd"), sample_size=16)


@pytest.fixture(scope="session")
def tiny_rewards(tmp_path_factory):
    """A tiny random twin of every learned reward, {name: folder}, in its hub repository's layout."""
    from minirl.rewards import make_tiny_rewards
    return make_tiny_rewards(tmp_path_factory.mktemp("rewards"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
