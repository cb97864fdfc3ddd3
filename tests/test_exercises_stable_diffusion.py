"""The checkers of notebook 08 pass minirl's own answers and the teachers' solutions, fail plausible wrong ones
naming what the failing case tests, and report a stub."""

import torch

from minirl.exercises.solutions import stable_diffusion as solution
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


def test_lora_checker(capsys):
    assert check_lora_parameters(lora_parameters)
    assert check_lora_parameters(solution.lora_parameters)
    capsys.readouterr()
    # square projections: forgets that cross-attention's to_k, to_v read the text embedding
    assert not check_lora_parameters(lambda unet, r: sum(2 * r * m.out_features for m in projections(unet)))
    assert "case 0 (the tiny UNet (blocks of width 32 and 64, text of width 32)" in capsys.readouterr().out


def test_unet_passes_checker(capsys):
    assert check_unet_passes_per_epoch(unet_passes_per_epoch)
    assert check_unet_passes_per_epoch(solution.unet_passes_per_epoch)
    capsys.readouterr()

    def forgets_cfg(*case):
        return (*solution.unet_passes_per_epoch(*case)[:3], solution.unet_passes_per_epoch(*case)[3] // 2)

    def forgets_micro_batch(config, *rest):
        passes = solution.unet_passes_per_epoch(config, *rest)
        return passes if not config.train_micro_batch else (*passes[:3], 2 * config.train_batch_size)

    def ignores_guidance_off(config, num_steps, num_trainable, guidance_scale):
        return solution.unet_passes_per_epoch(config, num_steps, num_trainable, 5.0)

    assert not check_unet_passes_per_epoch(forgets_cfg)
    assert "case 0 (" in capsys.readouterr().out
    assert not check_unet_passes_per_epoch(forgets_micro_batch)
    assert "train_micro_batch" in capsys.readouterr().out
    assert not check_unet_passes_per_epoch(ignores_guidance_off)
    assert "guidance 1" in capsys.readouterr().out


def test_stubs_are_not_attempted(capsys):
    def stub(*args):
        raise NotImplementedError

    assert not check_lora_parameters(stub) and not check_unet_passes_per_epoch(stub)
    assert capsys.readouterr().out.count("not attempted yet") == 2
