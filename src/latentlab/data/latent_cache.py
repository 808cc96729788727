"""The latent cache: a training set encoded once, read back memory-mapped.

A cache is a directory, normally written next to the tokenizer it came from::

    out/
      cache.json               what the cache holds (below)
      shard_00000.safetensors  tensors `values` (N_s, ...) and `labels` (N_s,) int64
      shard_00001.safetensors
      ...

``cache.json``::

    {"format": 1,
     "kind": "latents" | "indices",
     "count": N, "item_shape": [C, h, w], "dtype": "float32" | "int64",
     "class_names": [...],
     "source": {"tokenizer": "runs/a", "fingerprint": "1a2b..."},
     "shards": [{"file": "shard_00000.safetensors", "count": N_s, "bytes": ..., "sha256": ...}]}

`kind` "latents" holds normalised float32 latents (C, h, w) or (C,); "indices" holds int64 token
indices (h, w) or (). `source` is a plain str -> str record of what made the cache: this module
sits in `data` and may not import `tokenizers`, so the caller encodes and describes the source.

Reading never loads the cache into memory: each shard's safetensors header is parsed here and the
`values` / `labels` byte ranges are `np.memmap`-ed, so a cache larger than RAM trains and the
operating system's page cache does the buffering.

Legend: N items, B batch, C latent channels, h w latent height and width.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from pathlib import Path

import numpy as np
import torch

from latentlab.data.base import Batch, LatentlabDataset
from latentlab.errors import DataError

FORMAT = 1
META = "cache.json"
KINDS = {"latents": torch.float32, "indices": torch.int64}  # kind -> dtype stored on disk
DTYPE_NAMES = {torch.float32: "float32", torch.int64: "int64"}
# safetensors dtype tags -> numpy dtypes; the format is little-endian throughout
SAFETENSORS_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?",
}
# sha256 of every shard is checked on open when the whole cache is at most this size
VERIFY_LIMIT_BYTES = 256 * 2**20
MAX_HEADER_BYTES = 100 * 2**20  # the safetensors reference implementation's own limit


def shard_name(i: int) -> str:
    return f"shard_{i:05d}.safetensors"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(2**20):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def describe_source(source: dict[str, str]) -> str:
    """{"tokenizer": "runs/a", "fingerprint": "1a2b"} -> "tokenizer 'runs/a' (fingerprint 1a2b)"."""
    ordered = sorted(source.items(), key=lambda kv: kv[0] != "tokenizer")  # tokenizer first
    names = ", ".join(f"{k} '{v}'" for k, v in ordered if k != "fingerprint")
    if "fingerprint" in source:
        fp = f"(fingerprint {source['fingerprint']})"
        return f"{names} {fp}" if names else fp
    return names or "an unnamed source"


# ---------------------------------------------------------------------------------------------
# reading


def _read_header(path: Path) -> tuple[dict, int]:
    """A safetensors file's JSON header and the byte offset where its data region starts.

    Format (safetensors spec): 8-byte little-endian u64 N, then N bytes of JSON mapping each
    tensor name to {"dtype", "shape", "data_offsets": [begin, end]} relative to byte 8 + N.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise DataError(f"{path}: too short for a safetensors header")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES:
                raise DataError(f"{path}: safetensors header length {n} is implausible")
            text = f.read(n)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if len(text) != n:
        raise DataError(f"{path}: truncated inside its safetensors header")
    try:
        header = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: safetensors header does not parse ({e})") from None
    if not isinstance(header, dict):
        raise DataError(f"{path}: safetensors header is not a JSON object")
    return header, 8 + n


def _tensor_span(path: Path, header: dict, name: str, dtype: str,
                 shape: tuple[int, ...]) -> tuple[int, int]:
    """Check tensor `name` in a parsed header; return (begin, end) within the data region."""
    entry = header.get(name)
    if not isinstance(entry, dict):
        raise DataError(f"{path}: no tensor {name!r} in the safetensors header")
    if SAFETENSORS_DTYPES.get(entry.get("dtype")) != dtype:
        raise DataError(f"{path}: tensor {name!r} is {entry.get('dtype')}, expected "
                        f"{next(k for k, v in SAFETENSORS_DTYPES.items() if v == dtype)}")
    if entry.get("shape") != list(shape):
        raise DataError(f"{path}: tensor {name!r} has shape {entry.get('shape')}, the cache "
                        f"records {list(shape)}")
    offsets = entry.get("data_offsets")
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets) or offsets[1] - offsets[0] != nbytes
            or offsets[0] < 0):
        raise DataError(f"{path}: tensor {name!r} has bad data_offsets {offsets}")
    return offsets[0], offsets[1]


class LatentCache(LatentlabDataset):
    """A latent cache read back memory-mapped, as a dataset the training loop can use.

    Batches come from `__getitems__` (fancy indexing of the memmaps, indices may span shards).
    For kind "latents" `Batch.x` is float32 (B, C, h, w) or (B, C) as for any dataset; for kind
    "indices" `Batch.x` holds int64 token indices (B, h, w) or (B,) — not pixels.

    Opening reads `cache.json` and every shard's header and checks the file sizes; the sha256 of
    every shard is checked too when `verify` is True, which by default it is only for caches of
    at most `VERIFY_LIMIT_BYTES` (256 MiB) in total, since hashing a huge cache on every open
    would read all of it. The memmaps are opened lazily in each process and dropped on pickling,
    so the dataset goes to DataLoader workers as a few paths and offsets.

    Args:
        path: the cache directory.
        expect_source: when given, the cache's `source` must match it, or DataError names both.
            Only the "fingerprint" entry is compared when it has one (a tokenizer that moved is
            still the same tokenizer); otherwise every entry it has.
        verify: check shard sha256 sums; None picks by total size as above.

    Attributes:
        kind: "latents" or "indices".
        source: the record of what made the cache.
        shape: one item's shape; class_names, name as for any dataset.
    """

    def __init__(self, path: str | os.PathLike, expect_source: dict[str, str] | None = None,
                 verify: bool | None = None):
        self.path = Path(path)
        meta = self._read_meta()
        self.kind: str = meta["kind"]
        self.source: dict[str, str] = meta["source"]
        self.class_names = list(meta["class_names"])
        self.shape = tuple(meta["item_shape"])
        self.name = f"latent-cache:{self.path}"
        self.count: int = meta["count"]
        self._meta = meta
        self._captions: list[str] | None = meta.get("captions")
        if self._captions is not None and (len(self._captions) != self.count or not all(
                isinstance(c, str) for c in self._captions)):
            raise DataError(f"{self.path / META}: 'captions' must be {self.count} strings")
        if expect_source is not None:
            self.check_source(expect_source)
        self.dtype = np.dtype(self.dtype_name)
        total = sum(s["bytes"] for s in meta["shards"])
        verify = total <= VERIFY_LIMIT_BYTES if verify is None else verify
        # per shard: (file, values offset, labels offset, count), all checked now, mapped later
        self._shards = [self._open_shard(s, verify) for s in meta["shards"]]
        self._ends = np.cumsum([s[3] for s in self._shards])  # item i lives in shard searchsorted
        self._maps: list[tuple[np.memmap, np.memmap]] | None = None

    # -- opening and checking ------------------------------------------------------------------

    def _read_meta(self) -> dict:
        file = self.path / META
        try:
            meta = json.loads(file.read_text())
        except FileNotFoundError:
            raise DataError(f"{file}: missing (not a latent cache, or its writing never "
                            f"finished)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{file}: does not parse ({e})") from None
        required = {"format": int, "kind": str, "count": int, "item_shape": list, "dtype": str,
                    "class_names": list, "source": dict, "shards": list}
        if not isinstance(meta, dict):
            raise DataError(f"{file}: not a JSON object")
        for key, typ in required.items():
            if not isinstance(meta.get(key), typ):
                raise DataError(f"{file}: field {key!r} is missing or not a {typ.__name__}")
        if meta["format"] != FORMAT:
            raise DataError(f"{file}: format {meta['format']} is not supported (expected "
                            f"{FORMAT})")
        if meta["kind"] not in KINDS or meta["dtype"] != DTYPE_NAMES[KINDS[meta["kind"]]]:
            raise DataError(f"{file}: kind {meta['kind']!r} with dtype {meta['dtype']!r} is not "
                            f"a known combination")
        shards = meta["shards"]
        fields = {"file": str, "count": int, "bytes": int, "sha256": str}
        if not shards or not all(isinstance(s, dict) and all(isinstance(s.get(k), t)
                                                             for k, t in fields.items())
                                 for s in shards):
            raise DataError(f"{file}: 'shards' must list {{file, count, bytes, sha256}} records")
        if sum(s["count"] for s in shards) != meta["count"]:
            raise DataError(f"{file}: shard counts do not add up to count {meta['count']}")
        if any(Path(s["file"]).name != s["file"] for s in shards):
            raise DataError(f"{file}: shard names must be plain file names")
        return meta

    def _open_shard(self, record: dict, verify: bool) -> tuple[Path, int, int, int]:
        file, n = self.path / record["file"], record["count"]
        if not file.is_file():
            raise DataError(f"{file}: shard missing from latent cache {self.path}")
        size = file.stat().st_size
        if size != record["bytes"]:
            raise DataError(f"{file}: {size} bytes, the cache records {record['bytes']} "
                            f"(truncated or replaced)")
        header, data_start = _read_header(file)
        v0, v1 = _tensor_span(file, header, "values", self.dtype_name, (n, *self.shape))
        l0, l1 = _tensor_span(file, header, "labels", "<i8", (n,))
        if data_start + max(v1, l1) > size:
            raise DataError(f"{file}: data runs past the end of the file (truncated)")
        if verify and _sha256(file) != record["sha256"]:
            raise DataError(f"{file}: sha256 differs from the one recorded in {META} (damaged)")
        return file, data_start + v0, data_start + l0, n

    @property
    def dtype_name(self) -> str:
        return "<f4" if self.kind == "latents" else "<i8"

    def check_source(self, expect: dict[str, str]) -> None:
        """Raise DataError unless this cache was made from `expect` (see the class docstring)."""
        keys = ["fingerprint"] if "fingerprint" in expect else list(expect)
        if any(self.source.get(k) != expect[k] for k in keys):
            raise DataError(f"cache {self.path} was made by {describe_source(self.source)}, "
                            f"not {describe_source(expect)}")

    # -- reading -------------------------------------------------------------------------------

    def _memmaps(self) -> list[tuple[np.memmap, np.memmap]]:
        if self._maps is None:
            self._maps = [(np.memmap(f, self.dtype, "r", offset=vo, shape=(n, *self.shape)),
                           np.memmap(f, "<i8", "r", offset=lo, shape=(n,)))
                          for f, vo, lo, n in self._shards]
        return self._maps

    @property
    def captioned(self) -> bool:
        return self._captions is not None

    def caption(self, i: int) -> str | None:
        return self._captions[i] if self._captions is not None else None

    def __getstate__(self) -> dict:
        # memmaps do not travel to worker processes: each process maps the files itself
        return {**self.__dict__, "_maps": None}

    def __len__(self) -> int:
        return self.count

    def load(self, i: int) -> tuple[torch.Tensor, int]:
        batch = self.__getitems__([i])
        return batch.x[0], int(batch.y[0])

    def __getitems__(self, indices: list[int]) -> Batch:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)  # (B,)
        n = self.count
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"{self.name}: index out of range for {n} items")
        idx = np.where(idx < 0, idx + n, idx)
        x = np.empty((len(idx), *self.shape), self.dtype)  # (B, ...)
        y = np.empty(len(idx), np.int64)  # (B,)
        shard_of = np.searchsorted(self._ends, idx, side="right")
        maps = self._memmaps()
        for s in np.unique(shard_of):
            sel = np.nonzero(shard_of == s)[0]
            local = idx[sel] - (self._ends[s - 1] if s else 0)
            order = np.argsort(local, kind="stable")  # ascending reads: kinder to the disk
            values, labels = maps[s]
            x[sel[order]] = values[local[order]]
            y[sel[order]] = labels[local[order]]
        return Batch(torch.from_numpy(x), torch.from_numpy(y))

    def fingerprint(self) -> str:
        """A short hash of the cache's record (its shards' sha256 sums, source and shape)."""
        key = json.dumps(self._meta, sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:16]
