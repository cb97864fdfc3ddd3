"""What every learned reward shares: where its files come from (a local folder or the hub), the device and
dtype it runs in, and the nn.Module it is.

A reward model's files are found the same way for a hub id and a local folder: `fetch` checks that a folder
holds every file the model needs (naming the missing one), or downloads exactly those files of a hub
repository (on a machine with internet) and returns the folder they landed in. The loaders then read only
local files, with safetensors or `torch.load(weights_only=True)`, never with pickle. Before any model is built,
`fetch` refuses a folder whose config.json names another kind of model, and a file that is cut short or garbled
(JSON that does not parse, a safetensors or torch.save file whose structure is broken), naming the file.
"""

import json
import pickle
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

MODEL_TYPES = {"clip": "a CLIP", "owlv2": "an OWLv2 detector", "owlvit": "an OWL-ViT detector"}  # model_type, in words
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}


class RewardModel(torch.nn.Module):
    """A learned reward: frozen weights, `reward(images, prompts, metadata) -> (rewards (B,) fp32, info)` with
    images (B, 3, H, W) in [0, 1]. Its weights never train, but the rewards are differentiable with respect to
    the images (direct reward backpropagation: DRaFT, AlignProp)."""

    def freeze(self, device, dtype):
        """Eval mode, no parameter gradients, on `device` in `dtype`; returns self."""
        return self.requires_grad_(False).eval().to(device=device, dtype=dtype)

    @property
    def device(self):
        return next(self.parameters()).device

    @property
    def dtype(self):
        return next(self.parameters()).dtype


def fetch(path_or_id, files, name, model_type=None):
    """The local folder holding `files` (each a name, or a tuple of alternative names), each checked to be whole
    (`check_file`): `path_or_id` itself if it is a folder, else the hub repository `path_or_id`, of which only
    those files are downloaded. With `model_type`, the folder's config.json must name it: a folder of another
    model is refused as such, before any file it lacks."""
    path = Path(path_or_id).expanduser()
    if path.exists() or str(path_or_id).startswith((".", "/", "~")) or str(path_or_id).count("/") != 1:
        if not path.is_dir():
            raise FileNotFoundError(f"{name}: {str(path_or_id)!r} is neither a folder nor a hub id "
                                    f"('owner/name'); a {name} folder holds {_describe(files)}")
        if model_type is not None and (path / "config.json").is_file():
            held = read_json(path / "config.json", name).get("model_type")
            if held != model_type:
                what = MODEL_TYPES.get(held, "another kind of model")
                raise ValueError(f"{name} folder {str(path)!r} holds {what} (config.json: model_type {held!r}); "
                                 f"{name} expects {MODEL_TYPES[model_type]} (model_type {model_type!r})")
        found = [next((path / alt for alt in _alternatives(f) if (path / alt).is_file()), None) for f in files]
        missing = [f for f, file in zip(files, found) if file is None]
        if missing:
            raise FileNotFoundError(f"{name} folder {str(path)!r} is missing {_describe(missing)}; a {name} folder "
                                    f"holds {_describe(files)}, as its hub repository does (write a tiny one "
                                    f"with `minirl make-tiny-rewards DIR`)")
        for file in found:
            check_file(file, name)
        return path
    from huggingface_hub import snapshot_download
    try:  # each file alone; of alternatives, the first the repository has (not both of safetensors and .bin)
        for f in files:
            for alternative in _alternatives(f):
                folder = Path(snapshot_download(repo_id=str(path_or_id), allow_patterns=[alternative]))
                if (folder / alternative).is_file():
                    break
    except Exception as e:  # offline, a wrong id, a gated repository: say which model and why
        raise FileNotFoundError(f"{name}: could not fetch {_describe(files)} of the hub repository "
                                f"{str(path_or_id)!r} ({type(e).__name__}: {e}); on a machine without the hub, "
                                f"pass a local folder with those files") from e
    return fetch(folder, files, name, model_type)


def check_file(file, name):
    """Raise a one-line ValueError naming `file` if it is cut short or garbled: JSON that does not parse, a
    safetensors file whose header does not cover the file exactly, a torch.save file that is neither a whole zip
    archive nor a (legacy) pickle. Reads headers and the zip directory only, never the weights."""
    file = Path(file)
    if file.suffix == ".json":
        read_json(file, name)
        return
    try:
        if file.suffix == ".safetensors":
            with safe_open(file, framework="pt"):
                pass
        elif file.suffix in (".pt", ".pth", ".bin"):
            with open(file, "rb") as f:
                legacy = f.read(1) == b"\x80"  # torch.save before torch 1.6 wrote a bare pickle
            if not legacy:
                zipfile.ZipFile(file).close()
    except (ValueError, SafetensorError, zipfile.BadZipFile) as e:
        raise _corrupt(file, name, e) from e


def read_json(file, name):
    """A JSON file's content, or a one-line error naming the file."""
    try:
        return json.loads(Path(file).read_text(encoding="utf-8"))
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise _corrupt(file, name, e) from e


def _corrupt(file, name, error):
    return ValueError(f"{name}: {str(file)!r} is corrupt or incomplete ({type(error).__name__}: "
                      f"{_first_line(error)}); fetch or copy it again")


def device_and_dtype(device=None, dtype=None):
    """(torch.device, torch.dtype) for a reward model, checked: fp32 anywhere, bf16 where this machine runs it,
    fp16 on GPUs only. Defaults: a GPU if there is one, fp32."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)} or a torch.dtype; got {dtype!r}")
        dtype = DTYPES[dtype]
    dtype = dtype or torch.float32
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be torch.float32, torch.bfloat16 or torch.float16; got {dtype}")
    if device.type == "cpu" and dtype == torch.float16:
        raise ValueError("dtype float16 is not supported on CPU (many CPU kernels lack it, and it overflows); "
                         "use float32 or bfloat16 on CPU")
    if dtype == torch.bfloat16:
        try:
            x = torch.ones(1, 3, 4, 4, device=device, dtype=dtype)
            torch.nn.functional.conv2d(x, torch.ones(2, 3, 2, 2, device=device, dtype=dtype)).sum().item()
        except RuntimeError as e:
            raise ValueError(f"dtype bfloat16 was requested on {device}, which cannot run it ({e}); use "
                             f"float32") from e
    return device, dtype


def load_weights(file, name):
    """A state dict from a .safetensors file, or from a .pt/.pth/.bin file with torch.load(weights_only=True)
    (fetched: checked whole); a file that cannot be read is named in one line."""
    file = Path(file)
    try:
        if file.suffix == ".safetensors":
            return load_file(file)
        return torch.load(file, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, SafetensorError) as e:  # a damaged archive member, or
        # a pickle of more than tensors, which weights_only refuses
        reader = "safetensors" if file.suffix == ".safetensors" else "torch.load(weights_only=True)"
        raise ValueError(f"{name}: {reader} cannot read {str(file)!r} ({type(e).__name__}: {_first_line(e)})") from e


def _alternatives(f):
    return f if isinstance(f, tuple) else (f,)


def _describe(files):
    return ", ".join(" or ".join(_alternatives(f)) for f in files)


def _first_line(error):
    return (str(error).strip().splitlines() or [""])[0]
