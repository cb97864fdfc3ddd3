"""Checkpoints without pickle: tensors in safetensors, everything else in JSON, written atomically.

A state is any tree of dicts, lists, numbers, strings and tensors (a model's parameters, an optimizer's
state_dict, RNG states, a stat tracker). `save_state` writes its tensors to `state.safetensors` and the rest
of the tree to `state.json` inside a hidden scratch folder (`.NAME.*.tmp`), flushed to disk, then renames
it into place and points root/latest at it. `latest` names a complete folder at every moment, and a visible
folder is always complete, so a run killed at any point leaves a loadable checkpoint; the scratch folders a
kill leaves behind are removed by the next save or prune. One process writes to a root at a time.

Both files carry the save's random id, so a state.json is never read with another save's tensors.
`load_state` never unpickles anything and says which checkpoint is damaged and how (`DamagedCheckpoint`);
`load_newest` does not trust `latest` alone: a missing or dangling pointer, or a damaged checkpoint, sends it
to the next older complete one, with notes saying so.
"""

import json
import os
import random
import re
import shutil
import tempfile
import uuid
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

LATEST = "latest"  # a file naming the newest complete checkpoint folder


class DamagedCheckpoint(ValueError):
    """A checkpoint folder that cannot be loaded whole: a file missing, torn or from another save."""


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
    """Write `state` to root/name atomically and point root/latest at it; return the folder.

    If root/name exists it is replaced: meanwhile `latest` names the new state's scratch folder."""
    if name in ("", LATEST) or name.startswith(".") or Path(name).name != name:
        raise ValueError(f"name must be a folder name, not {LATEST!r} and not starting with '.' (scratch "
                         f"folders); got {name!r}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = _scratch(root, name)
    try:
        tensors, save_id = {}, uuid.uuid4().hex
        tree = flatten(state, tensors)
        save_file(tensors, tmp / "state.safetensors", metadata={"id": save_id})
        (tmp / "state.json").write_text(json.dumps({"id": save_id, "state": tree}))
        for f in tmp.iterdir():
            _fsync(f)
    except BaseException as e:
        shutil.rmtree(tmp)
        if isinstance(e, (OSError, SafetensorError)):  # a full disk, say: the error names the checkpoint
            raise OSError(f"cannot write checkpoint {str(root / name)!r}: {e}") from e
        raise
    final = root / name
    if final.exists():
        _point(root, tmp.name)                          # the new state, complete, while the old one goes
        os.replace(final, _scratch(root, name))
        linked = _scratch(root, name)                   # a second name for its files: tmp stays pointed at
        for f in tmp.iterdir():
            os.link(f, linked / f.name)
        tmp = linked
    os.replace(tmp, final)
    _point(root, name)
    _remove_scratch(root)
    return final


def load_state(folder, check=None):
    """The state saved in a checkpoint folder (or in the one root/latest names). `check(state)`, if given, may
    raise DamagedCheckpoint for a state whose contents are wrong (a field of the wrong type); every damage is
    raised as DamagedCheckpoint naming the folder."""
    folder = Path(folder)
    if (folder / LATEST).is_file():
        folder = folder / (folder / LATEST).read_text().strip()
    if not (folder / "state.json").is_file():
        raise FileNotFoundError(f"no checkpoint in {str(folder)!r}: expected state.json and state.safetensors, "
                                f"or a '{LATEST}' file naming a checkpoint folder")
    try:
        try:
            document = json.loads((folder / "state.json").read_text())
        except ValueError as e:
            raise DamagedCheckpoint(f"state.json is not valid JSON ({e})") from e
        try:
            with safe_open(folder / "state.safetensors", framework="pt") as f:
                save_id, tensors = (f.metadata() or {}).get("id"), {key: f.get_tensor(key) for key in f.keys()}
        except (OSError, SafetensorError) as e:
            raise DamagedCheckpoint(f"state.safetensors cannot be read ({e})") from e
        if not (isinstance(document, dict) and document.keys() == {"id", "state"}):
            document = {"id": None, "state": document}  # saved before checkpoints had ids
        if document["id"] != save_id:
            raise DamagedCheckpoint("state.json and state.safetensors are from different saves")
        try:
            state = unflatten(document["state"], tensors)
        except (KeyError, TypeError, ValueError) as e:
            raise DamagedCheckpoint(f"state.json does not describe state.safetensors' tensors ({e!r})") from e
        if check is not None:
            check(state)
    except DamagedCheckpoint as e:
        raise DamagedCheckpoint(f"checkpoint {str(folder)!r} is damaged: {e}") from e
    return state


def load_newest(root, check=None):
    """The newest complete checkpoint under root: the one `latest` names if it loads, else the newest by number
    that does. Returns (folder, state, notes): the notes say what was passed over and why (none when `latest`
    loaded). `check` as in load_state. Raises DamagedCheckpoint listing every damage when none loads."""
    root = Path(root)
    folders = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=_by_number,
                     reverse=True) if root.is_dir() else []
    named, notes = latest(root), []
    if named is None:
        notes.append(f"no '{LATEST}' file in {str(root)!r}")
    elif not named.is_dir():
        notes.append(f"'{LATEST}' names {named.name!r}, which is not there")
    candidates = ([named] if named is not None and named.is_dir() else []) + [p for p in folders if p != named]
    if not candidates:
        raise FileNotFoundError(f"no checkpoint under {str(root)!r}")
    for folder in candidates:
        try:
            return folder, load_state(folder, check), notes
        except (DamagedCheckpoint, FileNotFoundError) as e:  # a folder without state.json is no checkpoint either
            notes.append(str(e))
    raise DamagedCheckpoint(f"no complete checkpoint under {str(root)!r}: {'; '.join(notes)}")


def trainable_params(module, trainable, folder, hint):
    """`module`'s parameters that require grad, {name: parameter}, checked to be exactly those whose weights a
    checkpoint's `trainable` ({name: tensor}) holds; a ValueError naming the folder, the first differing names
    and `hint` (what to check) otherwise."""
    params = {name: p for name, p in module.named_parameters() if p.requires_grad}
    differ = sorted(params.keys() ^ trainable.keys())
    if differ:
        raise ValueError(f"checkpoint {str(folder)!r} does not fit the model's trainable parameters (e.g. "
                         f"{differ[:3]}): {hint}")
    return params


def latest(root):
    """The newest complete checkpoint folder under root, or None."""
    pointer = Path(root) / LATEST
    return Path(root) / pointer.read_text().strip() if pointer.is_file() else None


def prune(root, keep):
    """Delete all but the `keep` newest checkpoint folders, by the numbers in their names (epoch_10000 is
    newer than epoch_9999), never the one `latest` names; and the scratch folders a killed save left."""
    if not (isinstance(keep, int) and keep >= 1):
        raise ValueError(f"keep must be an int >= 1 (the number of checkpoints to keep); got {keep!r}")
    root = Path(root)
    current = latest(root)
    folders = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=_by_number)
    for old in folders[:-keep]:
        if old != current:
            os.replace(old, _scratch(root, old.name))  # out of sight at once, then deleted
    _remove_scratch(root)


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


def _by_number(folder):
    """Sort key: the name with its digit runs as numbers (epoch_9999 before epoch_10000)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", folder.name)]


def _point(root, name):
    """Make root/latest name `name`, atomically."""
    write_text(root / LATEST, name)


def write_text(path, text):
    """Replace a text file atomically: a scratch file beside it, flushed to disk, renamed over it, and the
    folder's entry flushed too. A kill at any point leaves the old contents or the new ones."""
    path = Path(path)
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_text(text)
    _fsync(scratch)
    os.replace(scratch, path)
    _fsync(path.parent)


def _scratch(root, name):
    """A new empty hidden folder in root for checkpoint `name`: written into, or a checkpoint moved onto it."""
    return Path(tempfile.mkdtemp(dir=root, prefix=f".{name}.", suffix=".tmp"))


def _remove_scratch(root):
    """Delete the scratch folders in root, except one `latest` names (a kill while replacing a checkpoint)."""
    current = latest(root)
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith(".") and p.name.endswith(".tmp") and p != current:
            shutil.rmtree(p)


def _fsync(path):
    """Flush a file's (or a folder's entries') writes to disk: a rename after it never exposes an empty file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _to_lists(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (tuple, list)):
        return [_to_lists(v) for v in x]
    return x


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x
