"""Writing a latent cache (format described in `latent_cache`): shards built in a temporary
sibling directory and renamed into place, so no reader ever sees half a cache."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file

from latentlab.data.base import UNLABELLED
from latentlab.data.latent_cache import (
    DTYPE_NAMES,
    FORMAT,
    KINDS,
    META,
    _fsync,
    _sha256,
    shard_name,
)
from latentlab.errors import DataError
from latentlab.io import readable, write_json


class _ShardWriter:
    """Buffers (values, labels) batches and writes full shards into a temporary directory."""

    def __init__(self, tmp: Path, shard_size: int):
        self.tmp, self.shard_size = tmp, shard_size
        self.values: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.buffered = 0
        self.records: list[dict] = []

    def add(self, values: torch.Tensor, labels: torch.Tensor) -> None:
        self.values.append(values)
        self.labels.append(labels)
        self.buffered += len(values)
        while self.buffered >= self.shard_size:
            self.flush(self.shard_size)

    def flush(self, n: int | None = None) -> None:
        """Write the first `n` buffered items (all when None) as the next shard."""
        if self.buffered == 0:
            return
        values, labels = torch.cat(self.values), torch.cat(self.labels)
        n = self.buffered if n is None else n
        path = self.tmp / shard_name(len(self.records))
        save_file({"values": values[:n].contiguous(), "labels": labels[:n].contiguous()}, path)
        _fsync(path)
        self.records.append({"file": path.name, "count": n, "bytes": path.stat().st_size,
                             "sha256": _sha256(path)})
        rest = self.buffered - n
        self.values = [values[n:]] if rest else []
        self.labels = [labels[n:]] if rest else []
        self.buffered = rest


def _check_batch(b: int, start: int, values: torch.Tensor, labels: torch.Tensor,
                 kind: str, class_names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate batch `b` (its first item is item `start` of the cache); return CPU tensors."""
    where = f"latent cache batch {b}"
    if kind == "latents" and not values.dtype.is_floating_point:
        raise DataError(f"{where}: latents must be floating point, got {values.dtype}")
    if kind == "indices" and (values.dtype.is_floating_point or values.dtype.is_complex
                              or values.dtype == torch.bool):
        raise DataError(f"{where}: token indices must be integers, got {values.dtype}")
    if values.ndim < 1:
        raise DataError(f"{where}: values must have a batch dimension, got a scalar")
    if labels.shape != (len(values),):
        raise DataError(f"{where}: labels must be ({len(values)},), got {tuple(labels.shape)}")
    values = values.detach().to("cpu", KINDS[kind])
    labels = labels.detach().to("cpu", torch.int64)
    if kind == "latents":
        bad = ~torch.isfinite(values).reshape(len(values), -1).all(1)
        if bad.any():
            i = int(bad.nonzero()[0])
            raise DataError(f"{where}: item {i} (cache item {start + i}) contains NaN or inf")
    if class_names:
        bad = (labels < 0) | (labels >= len(class_names))
        if bad.any():
            i = int(bad.nonzero()[0])
            raise DataError(f"{where}: label {int(labels[i])} of item {i} is outside "
                            f"[0, {len(class_names)})")
    elif (labels != UNLABELLED).any():
        raise DataError(f"{where}: no class names given, so every label must be {UNLABELLED}")
    return values, labels


def write_latent_cache(out: str | os.PathLike, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                       source: dict[str, str], class_names: list[str],
                       kind: Literal["latents", "indices"], shard_size: int = 65536,
                       overwrite: bool = False, captions: list[str] | None = None) -> Path:
    """Write encoded batches as a latent cache directory `out` (format in the module docstring).

    Everything is written into a temporary sibling directory that is renamed onto `out` only when
    complete, so a crash or an error never leaves a half-written cache (nor the temporary
    directory). At most `shard_size` items are held in memory at a time.

    Args:
        out: the cache directory; must not exist unless `overwrite`.
        batches: (values, labels) pairs: values (B, C, h, w) or (B, C) normalised latents for
            kind "latents" (stored float32), or (B, h, w) / (B,) token indices for kind
            "indices" (stored int64); labels (B,) int64 in [0, len(class_names)), or all -1 when
            `class_names` is empty. Every batch must have the same item shape.
        source: what made the cache, e.g. {"tokenizer": path, "fingerprint": hash}; str -> str.
        class_names: one name per class; empty when unlabelled.
        kind: "latents" or "indices".
        shard_size: items per shard file (the last shard may be smaller).
        overwrite: replace an existing `out`.
        captions: one text per item, in order, for captioned data (kept in cache.json).

    Returns:
        `out` as a Path.

    Raises:
        DataError: `out` exists, a batch is malformed or holds NaN/inf, or there are no items.
    """
    out = Path(out)
    if kind not in KINDS:
        raise DataError(f"latent cache {out}: kind must be one of {list(KINDS)}, got {kind!r}")
    if shard_size < 1:
        raise DataError(f"latent cache {out}: shard_size must be positive, got {shard_size}")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in source.items()):
        raise DataError(f"latent cache {out}: source must map str to str, got {source!r}")
    if out.exists() and not overwrite:
        raise DataError(f"latent cache {out} already exists (pass overwrite=True to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    readable(tmp, directory=True)
    try:
        writer = _ShardWriter(tmp, shard_size)
        item_shape, count = None, 0
        for b, (values, labels) in enumerate(batches):
            values, labels = _check_batch(b, count, values, labels, kind, class_names)
            if item_shape is None:
                item_shape = tuple(values.shape[1:])
            elif tuple(values.shape[1:]) != item_shape:
                raise DataError(f"latent cache batch {b}: items are {tuple(values.shape[1:])}, "
                                f"earlier batches were {item_shape}")
            writer.add(values, labels)
            count += len(values)
        if count == 0:
            raise DataError(f"latent cache {out}: no items to write (the batches were empty)")
        writer.flush()
        if captions is not None and len(captions) != count:
            raise DataError(f"latent cache {out}: {len(captions)} captions for {count} items")
        write_json(tmp / META, {
            "format": FORMAT, "kind": kind, "count": count, "item_shape": list(item_shape),
            "dtype": DTYPE_NAMES[KINDS[kind]], "class_names": list(class_names),
            "source": dict(source), "shards": writer.records,
        } | ({"captions": list(captions)} if captions is not None else {}))
        _replace_dir(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _replace_dir(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished `tmp` onto `out`; an old `out` is moved aside first, then removed."""
    if not out.exists():
        os.rename(tmp, out)  # fails, rather than merging, if `out` appeared meanwhile
        return
    if not overwrite:
        raise DataError(f"latent cache {out} already exists (pass overwrite=True to replace it)")
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    os.replace(out, old / out.name)
    os.rename(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


