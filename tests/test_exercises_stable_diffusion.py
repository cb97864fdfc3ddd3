"""The checkers of notebook 08 pass minirl's own answers and fail plausible wrong ones."""

import math

import torch

from minirl.exercises.stable_diffusion import (
    check_lora_parameters,
    check_unet_passes_per_epoch,
    lora_parameters,
    unet_passes_per_epoch,
)
from minirl.sd import LORA_TARGETS


def projections(unet):
    return [m for name, m in unet.named_modules()
            if isinstance(m, torch.nn.Linear) and any(name.endswith(t) for t in LORA_TARGETS)]


def test_lora_checker():
    assert check_lora_parameters(lora_parameters)
    assert check_lora_parameters(lambda unet, r: sum(r * (m.in_features + m.out_features) for m in projections(unet)))
    # square projections: forgets that cross-attention's to_k, to_v read the text embedding
    assert not check_lora_parameters(lambda unet, r: sum(2 * r * m.out_features for m in projections(unet)))


def test_unet_passes_checker():
    def by_hand(config, num_steps, num_trainable, guidance_scale):
        cfg = 2 if guidance_scale > 1 else 1
        n_train = max(1, int(num_trainable * config.timestep_fraction))
        micro = config.train_micro_batch or config.train_batch_size
        per_step = math.ceil(config.train_batch_size * n_train / micro)
        steps = config.inner_epochs * config.samples_per_epoch // config.train_batch_size
        return (num_steps * config.samples_per_epoch // config.sample_batch_size, cfg * config.sample_batch_size,
                steps * per_step, cfg * micro)

    assert check_unet_passes_per_epoch(unet_passes_per_epoch)
    assert check_unet_passes_per_epoch(by_hand)
    def forgets_cfg(*case):
        return (*by_hand(*case)[:3], by_hand(*case)[3] // 2)

    assert not check_unet_passes_per_epoch(forgets_cfg)


def test_stubs_are_not_attempted(capsys):
    def stub(*args):
        raise NotImplementedError

    assert not check_lora_parameters(stub) and not check_unet_passes_per_epoch(stub)
    assert capsys.readouterr().out.count("not attempted yet") == 2
