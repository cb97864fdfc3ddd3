"""The tiny world's text-to-image model and its pretraining.

Stable Diffusion's parts at 16 px, in pixel space (no VAE): a diffusers UNet2DConditionModel with
cross-attention at 8x8 and 4x4, a 2-layer CLIP text encoder of width 64, a word-level tokenizer over the
scene grammar's words, a cosine-schedule DDPM for training and DDIM (steps_offset=1) for sampling. About
1.8M parameters, 7 MB in safetensors. `pretrain` trains it from scratch on rendered scenes (minirl.tinyworld.scenes)
with the denoising loss L_pre, dropping 10% of captions so that classifier-free guidance works, and keeps an
exponential moving average of the weights, which is what it saves. With `objective="flow"` the same UNet
learns rectified flow instead, as Stable Diffusion 3 does: x_sigma = (1 - sigma) x_0 + sigma noise, the UNet
predicts the velocity noise - x_0, sampled by a FlowMatchEulerDiscreteScheduler (the policy takes Flow-GRPO's
SDE step on it, minirl.mdp.flow_sde_step_with_logprob).

Where the objects of a relation go is decided in the first, noisiest sampling steps, and there the usual
epsilon-prediction loss counts an error in x_0 only SNR(t) times (0.02 at t = 900): the committed model,
trained that way, draws a relation's objects in either order (minirl/tinyworld/diagnose.py). Two settings
put weight where layouts are decided: `prediction_type="v_prediction"` (as Stable Diffusion 2; its loss
counts the x_0 error 1 + SNR(t) times) and `high_noise`, the share of each batch noised at the noisiest fifth
of the timesteps, drawn from relation captions with `high_noise_kind="relation"`. With all three the model
learns order within 1,000 steps (docs/research.md measures it).
"""

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast
from transformers.utils import logging as transformers_logging

from minirl import checkpoint
from minirl.tinyworld import scenes
from minirl.losses import denoising_loss
from minirl.mdp import PREDICTION_TYPES
from minirl.policy import DiffusionPolicy
from minirl.tasks import seed_for

SPECIAL = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]
MAX_TOKENS = 12  # "[BOS] a green triangle left of a yellow circle [EOS]" is 10


def words():
    """Every word of the scene grammar (held-out captions reuse the training captions' words)."""
    return sorted({w for kind in scenes.KINDS for caption in scenes.prompts(kind, "train") for w in caption.split()})


def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    vocab = {w: i for i, w in enumerate(SPECIAL + words())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="[BOS]", eos_token="[EOS]",
                                   pad_token="[PAD]", unk_token="[UNK]", model_max_length=MAX_TOKENS)


def ddim_scheduler(prediction_type="epsilon"):
    """The tiny world's schedule: cosine betas, x_0 clipped to [-1, 1], DDIM with steps_offset=1."""
    return DDIMScheduler(beta_schedule="squaredcos_cap_v2", clip_sample=True, set_alpha_to_one=False, steps_offset=1,
                         prediction_type=prediction_type)


def flow_scheduler():
    """The flow world's schedule: sigma from 1 to 0 in even steps (shift 1: 16 px needs no shift to noisier steps,
    which SD3 applies at 1024 px)."""
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)


OBJECTIVES = ("diffusion", "flow")


def build(seed=0, size=16, prediction_type="epsilon", objective="diffusion"):
    """A fresh (unet, text_encoder, tokenizer, scheduler) with random weights."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=size, in_channels=3, out_channels=3, block_out_channels=(32, 64, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64, attention_head_dim=8, norm_num_groups=16)
    tokenizer = word_tokenizer()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=MAX_TOKENS, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    return unet, text_encoder, tokenizer, flow_scheduler() if objective == "flow" else ddim_scheduler(prediction_type)


def save(folder, unet, text_encoder, tokenizer, scheduler):
    folder = Path(folder)
    unet.save_pretrained(folder / "unet")
    text_encoder.save_pretrained(folder / "text_encoder")
    tokenizer.save_pretrained(folder / "tokenizer")
    scheduler.save_pretrained(folder / "scheduler")


TIMESTEP_SPACINGS = ("leading", "linspace", "trailing")


def load_policy(folder, timestep_spacing=None, **policy_kwargs):
    """The tiny world's model as a DiffusionPolicy (pixel space), on its saved scheduler: DDIM, or flow matching's
    Euler scheduler for a model pretrained with objective="flow". timestep_spacing overrides a DDIM scheduler's
    ("leading": 10 steps start at t = 901; "trailing": at t = 999, where the cosine schedule leaves no signal, so
    the first step's noise, an action, picks the layout rather than x_T. Only for v prediction: epsilon
    prediction's x_0 divides by sqrt(alpha_bar_999) = 5e-5 there)."""
    if timestep_spacing not in (None, *TIMESTEP_SPACINGS):
        raise ValueError(f"timestep_spacing must be None or one of {TIMESTEP_SPACINGS}; got {timestep_spacing!r}")
    folder = Path(folder)
    missing = [p for p in ("unet", "text_encoder", "tokenizer", "scheduler") if not (folder / p).is_dir()]
    if missing:
        raise FileNotFoundError(f"tiny-world model folder {str(folder)!r} is missing {missing}")
    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    bar = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # a bar over 36 tensors: a stray line in every notebook cell that loads
    try:
        text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder").requires_grad_(False)
    finally:
        if bar:
            transformers_logging.enable_progress_bar()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(folder / "tokenizer")
    if json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["_class_name"] == \
            FlowMatchEulerDiscreteScheduler.__name__:
        if timestep_spacing:
            raise ValueError(f"timestep_spacing={timestep_spacing!r} is for a DDIM model; {str(folder)!r} is a flow "
                             f"model (its steps run from sigma = 1 to 0)")
        scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(folder / "scheduler")
    else:
        scheduler = DDIMScheduler.from_pretrained(
            folder / "scheduler", **({"timestep_spacing": timestep_spacing} if timestep_spacing else {}))
    return DiffusionPolicy(unet, scheduler, text_encoder, tokenizer, **policy_kwargs)


@dataclass
class PretrainConfig:
    """Pretraining of the tiny world's model on rendered scenes."""
    out: str = "runs/pretrain"
    steps: int = 2200
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 100             # linear learning-rate warm-up steps
    ema: float = 0.999            # decay of the saved moving average of the weights
    caption_dropout: float = 0.1  # captions replaced by "" (for classifier-free guidance)
    bias: float = 0.8             # P(red) for an object whose colour the caption does not name
    objective: str = "diffusion"  # "diffusion" (DDPM noising, DDIM sampling) or "flow" (rectified flow, as SD3)
    prediction_type: str = "epsilon"  # diffusion: what the UNet predicts (SD 1.x); or "v_prediction" (SD 2), "sample"
    high_noise: float = 0.0       # share of each batch noised at the noisiest fifth of the timesteps
    high_noise_kind: str = ""     # draw that share's scenes from one kind of caption ("relation"); "": any kind
    flip: float = 0.0             # probability of mirroring a scene left-right (SD's --random_flip augmentation)
    size: int = 16
    seed: int = 0
    save_every: int = 200

    def check(self):
        """Every setting, before anything is written: a bad one would fail mid-run, or save an untrained model
        as if trained (0 steps; an EMA decay of 1 keeps the initial weights)."""
        from minirl.trainer import check_number
        for name in ("steps", "batch_size", "warmup", "save_every"):
            check_number(self, name, minimum=1, integer=True)
        check_number(self, "seed", minimum=0, integer=True)
        check_number(self, "lr", minimum=0, inclusive=False)
        for name in ("caption_dropout", "bias"):
            check_number(self, name, minimum=0, maximum=1)
        if not (isinstance(self.ema, (int, float)) and 0 <= self.ema < 1):
            raise ValueError(f"ema must be a finite number >= 0 and < 1 (at 1 the saved average stays the initial "
                             f"weights); got {self.ema!r}")
        if not (isinstance(self.size, int) and self.size >= 8 and self.size % 4 == 0):
            raise ValueError(f"size must be a multiple of 4 >= 8 (the UNet halves it twice); got {self.size!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}; got {self.objective!r}")
        if self.objective == "flow" and self.prediction_type != "epsilon":
            raise ValueError(f"prediction_type={self.prediction_type!r} is for the diffusion objective; flow "
                             f"matching predicts the velocity (leave prediction_type at its default)")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}; got {self.prediction_type!r}")
        if not 0 <= self.high_noise <= 1:
            raise ValueError(f"high_noise is a share of the batch and must be in [0, 1]; got {self.high_noise}")
        if not 0 <= self.flip <= 1:
            raise ValueError(f"flip is a probability and must be in [0, 1]; got {self.flip}")
        if self.high_noise_kind not in ("", *scenes.KINDS):
            raise ValueError(f"high_noise_kind must be '' (any) or one of {scenes.KINDS}; got "
                             f"{self.high_noise_kind!r}")


def timesteps(policy, n, k, generator=None):
    """n training timesteps: the first k uniform over the noisiest fifth, the rest as the objective draws them
    (`DiffusionPolicy.training_timesteps`: uniform for diffusion, logit-normal for flow matching)."""
    T = policy.scheduler.config.num_train_timesteps
    t = policy.training_timesteps(n, generator)
    if k:  # no draw at all for k = 0: the generator's stream stays that of the objective's timesteps
        t[:k] = torch.randint(T * 4 // 5, T, (k,), generator=generator)
    return t


def pretrain_batch(rng, cfg, k):
    """Rendered scenes (images, captions) for one step; with cfg.high_noise_kind, the first k, those that
    `timesteps` noises most, are of that kind. With cfg.flip, scenes are mirrored at random: their captions
    stay, so a mirrored "A left of B" shows A right of B (only "left of" and "right of" change truth)."""
    k = k if cfg.high_noise_kind else 0
    parts = [scenes.batch(rng, n, size=cfg.size, kind=kind, bias=cfg.bias)
             for n, kind in ((k, cfg.high_noise_kind), (cfg.batch_size - k, None)) if n]
    images = torch.cat([images for images, _, _ in parts])
    if cfg.flip:  # no draw without flips: the stream stays that of the plain recipe
        mirror = torch.tensor([rng.random() < cfg.flip for _ in range(len(images))])
        images = torch.where(mirror.view(-1, 1, 1, 1), images.flip(-1), images)
    return images, [c for _, captions, _ in parts for c in captions]


def pretrain(cfg, resume=False, log=print):
    """Train from scratch (or resume); write checkpoints, a loss log and the EMA model to cfg.out/model."""
    import random
    cfg.check()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    unet, text_encoder, tokenizer, scheduler = build(cfg.seed, cfg.size, cfg.prediction_type, cfg.objective)
    policy = DiffusionPolicy(unet, scheduler, text_encoder, tokenizer, guidance_scale=1.0)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-2)
    ema = [p.detach().clone() for p in params]
    step = 0
    if resume and checkpoint.latest(out / "checkpoints"):
        state = checkpoint.load_state(out / "checkpoints")
        with torch.no_grad():
            for p, v in zip(params, state["params"]):
                p.copy_(v)
        ema = state["ema"]
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        lines = (out / "loss.jsonl").read_text().splitlines()  # drop steps after the checkpoint: they rerun
        (out / "loss.jsonl").write_text("".join(f"{line}\n" for line in lines if json.loads(line)["step"] <= step))
        log(f"resumed at step {step}")
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    high = round(cfg.high_noise * cfg.batch_size)  # the first `high` scenes of each batch, at the noisiest t
    start = time.perf_counter()
    while step < cfg.steps:
        rng = random.Random(seed_for(cfg.seed, step))
        images, captions = pretrain_batch(rng, cfg, high)
        captions = ["" if rng.random() < cfg.caption_dropout else c for c in captions]
        generator = torch.Generator().manual_seed(seed_for(cfg.seed, step, "noise"))
        embeds = text_encoder(tokenizer(captions, padding="max_length", return_tensors="pt").input_ids)[0]
        t = timesteps(policy, cfg.batch_size, high, generator)
        pred, target = policy.denoising_prediction(images * 2 - 1, embeds, generator, t)
        loss, _ = denoising_loss(pred, target)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"pretraining loss is {loss.item()} at step {step}")
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / cfg.warmup)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        with torch.no_grad():
            for e, p in zip(ema, params):
                e.lerp_(p.detach(), 1 - cfg.ema)
        step += 1
        with open(out / "loss.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "loss": loss.item(), "grad_norm": float(grad_norm),
                                "seconds": time.perf_counter() - start}) + "\n")
        if step % cfg.save_every == 0 or step == cfg.steps:
            checkpoint.save_state({"params": params, "ema": ema, "optimizer": optimizer.state_dict(),
                                   "step": step}, out / "checkpoints", f"step_{step:06d}")
            checkpoint.prune(out / "checkpoints", 2)
            log(f"step {step}: loss {loss.item():.4f}, {time.perf_counter() - start:.0f} s")
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e)
    save(out / "model", unet, text_encoder, tokenizer, scheduler)
    return out / "model"
