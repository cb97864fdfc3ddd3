"""Checkpoints without pickle: tensors in safetensors, everything else in JSON, written atomically.

A state is any tree of dicts, lists, numbers, strings and tensors (a model's parameters, an optimizer's
state_dict, RNG states, a stat tracker). `save_state` writes its tensors to `state.safetensors` and the rest
of the tree to `state.json` inside a temporary folder, then renames the folder into place, so a run killed
while saving leaves the previous checkpoint intact. `load_state` never unpickles anything.
"""

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

LATEST = "latest"  # a file naming the newest complete checkpoint folder


def flatten(tree, tensors, prefix="t"):
    """Replace each tensor of `tree` by {"__tensor__": key}, collecting them in `tensors`; JSON-able result."""
    if isinstance(tree, torch.Tensor):
        key = f"{prefix}.{len(tensors)}"
        tensors[key] = tree.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(tree, dict):  # as pairs, so that int keys (optimizer state) survive JSON
        return {"__dict__": [[k, flatten(v, tensors, prefix)] for k, v in tree.items()]}
    if isinstance(tree, (list, tuple)):
        return [flatten(v, tensors, prefix) for v in tree]
    if isinstance(tree, (bool, int, float, str)) or tree is None:
        return tree
    raise TypeError(f"cannot checkpoint a value of type {type(tree).__name__}")


def unflatten(tree, tensors):
    if isinstance(tree, dict) and "__tensor__" in tree:
        return tensors[tree["__tensor__"]]
    if isinstance(tree, dict):
        return {k: unflatten(v, tensors) for k, v in tree["__dict__"]}
    if isinstance(tree, list):
        return [unflatten(v, tensors) for v in tree]
    return tree


def save_state(state, root, name):
    """Write `state` to root/name atomically and point root/latest at it; return the folder."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}."))
    tensors = {}
    tree = flatten(state, tensors)
    save_file(tensors, tmp / "state.safetensors")
    (tmp / "state.json").write_text(json.dumps(tree))
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _write_atomically(root / LATEST, name)
    return final


def load_state(folder):
    folder = Path(folder)
    if (folder / LATEST).is_file():
        folder = folder / (folder / LATEST).read_text().strip()
    if not (folder / "state.json").is_file():
        raise FileNotFoundError(f"no checkpoint in {str(folder)!r}: expected state.json and state.safetensors, "
                                f"or a '{LATEST}' file naming a checkpoint folder")
    tensors = load_file(folder / "state.safetensors")
    return unflatten(json.loads((folder / "state.json").read_text()), tensors)


def latest(root):
    """The newest complete checkpoint folder under root, or None."""
    pointer = Path(root) / LATEST
    return Path(root) / pointer.read_text().strip() if pointer.is_file() else None


def prune(root, keep):
    """Delete all but the `keep` newest checkpoint folders (names sort by age)."""
    folders = sorted(p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))
    for old in folders[:-keep]:
        shutil.rmtree(old)


def rng_state():
    state = {"torch": torch.get_rng_state(), "python": _to_lists(random.getstate()),
             "numpy": _to_lists(np.random.get_state())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    random.setstate(_to_tuples(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_atomically(path, text):
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _to_lists(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (tuple, list)):
        return [_to_lists(v) for v in x]
    return x


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x
