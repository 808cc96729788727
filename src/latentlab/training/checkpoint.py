"""Checkpoints that describe themselves, are written atomically and refuse to load when damaged.

Layout of one checkpoint, `checkpoints/step_00001000/`:
    weights.safetensors   every model tensor (trainable weights, buffers, EMA copies)
    state.pt              optimizer states and RNG states; read with `weights_only=True`
    meta.json             step, data position, config, library version, sha256 of both files
A text file `checkpoints/latest` names the newest complete checkpoint. A checkpoint is built in a
hidden temporary directory and renamed into place, and `latest` moves only after that rename, so
a process killed at any moment, or a write that fails (disk full: an OSError naming the
checkpoint), leaves the previous checkpoint intact and pointed to.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from latentlab import __version__
from latentlab.errors import CheckpointError
from latentlab.io import readable, write_text, writing

WEIGHTS, STATE, META, LATEST = "weights.safetensors", "state.pt", "meta.json", "latest"


@dataclass
class Checkpoint:
    """A loaded checkpoint: tensors by name, optimizer/RNG state and metadata."""

    path: Path
    tensors: dict[str, torch.Tensor]
    state: dict
    meta: dict

    @property
    def step(self) -> int:
        return int(self.meta["step"])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def step_name(step: int) -> str:
    return f"step_{step:08d}"


def save(directory: Path, step: int, tensors: dict[str, torch.Tensor], state: dict,
         meta: dict, keep: int = 3) -> Path:
    """Write checkpoint `step` under `directory`, point `latest` at it, keep the newest `keep`."""
    final = directory / step_name(step)
    with writing(final):
        directory.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=directory))
        _write(tmp, final, tensors, state, {**meta, "step": step, "version": __version__})
    write_text(directory / LATEST, final.name + "\n")
    _prune(directory, keep, final.name)
    return final


def _write(tmp: Path, final: Path, tensors: dict[str, torch.Tensor], state: dict,
           meta: dict) -> None:
    """Fill the temporary directory `tmp` and rename it to `final`; on any error remove it."""
    try:
        readable(tmp, directory=True)
        # safetensors refuses shared storage (tied weights): give each tensor its own copy
        save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()},
                  tmp / WEIGHTS)
        readable(tmp / WEIGHTS)  # safetensors writes 0600
        with open(tmp / STATE, "wb") as f:  # a file object: a failed write keeps its errno
            torch.save(state, f)
        files = {name: _sha256(tmp / name) for name in (WEIGHTS, STATE)}
        (tmp / META).write_text(json.dumps({**meta, "files": files}, indent=2, sort_keys=True))
        if final.exists():  # a resumed run re-saving a step it had already reached
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _prune(directory: Path, keep: int, latest: str) -> None:
    names = sorted(p.name for p in directory.glob("step_*") if p.is_dir())
    for name in names[:-keep]:
        if name != latest:
            shutil.rmtree(directory / name, ignore_errors=True)


def latest(directory: Path) -> Path | None:
    """The newest complete checkpoint under `directory`, or None when there is none."""
    pointer = directory / LATEST
    if not pointer.exists():
        return None
    path = directory / pointer.read_text().strip()
    if not path.is_dir():
        raise CheckpointError(f"{pointer} names {path.name}, which does not exist")
    return path


def load(path: Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load and verify one checkpoint directory; any damage raises CheckpointError."""
    meta_path = path / META
    try:
        meta = json.loads(meta_path.read_text())
        files = meta["files"]
    except FileNotFoundError:
        raise CheckpointError(f"{meta_path}: missing (not a latentlab checkpoint)") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise CheckpointError(f"{meta_path}: damaged metadata") from None
    for name, digest in files.items():
        if not (path / name).exists():
            raise CheckpointError(f"{path / name}: missing")
        if _sha256(path / name) != digest:
            raise CheckpointError(f"{path / name}: checksum mismatch (truncated or corrupt)")
    try:
        tensors = load_file(path / WEIGHTS, device=str(map_location))
        state = torch.load(path / STATE, map_location=map_location, weights_only=True)
    except (SafetensorError, RuntimeError, OSError) as e:
        raise CheckpointError(f"{path}: cannot be read ({e})") from None
    return Checkpoint(path, tensors, state, meta)


def load_latest(directory: Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """The newest checkpoint under `directory`, verified."""
    path = latest(directory)
    if path is None:
        raise CheckpointError(f"{directory}: no checkpoint to resume from")
    return load(path, map_location)
