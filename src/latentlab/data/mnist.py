"""MNIST in its original IDX files (plain or gzipped), parsed here without any download code.

An IDX file is a big-endian header, magic (0x0000 0x08 ndim) then ndim uint32 sizes, followed
by the uint8 values in C order. Images are (N, 28, 28), labels (N,) in 0..9.

Legend: N images, H height, W width.
"""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np

from latentlab.data.base import ArrayDataset
from latentlab.errors import DataError

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
NUM_CLASSES = 10


def read_bytes(directory: Path, stem: str) -> tuple[Path, bytes]:
    """The contents of `stem` or `stem.gz` in `directory`, and the path that was read."""
    for path in (directory / stem, directory / f"{stem}.gz"):
        if not path.is_file():
            continue
        try:
            return path, (gzip.decompress(path.read_bytes()) if path.suffix == ".gz"
                          else path.read_bytes())
        except (OSError, EOFError) as e:  # a damaged or truncated gzip stream
            raise DataError(f"{path}: cannot read ({e})") from None
    raise DataError(f"{directory}: missing {stem} (or {stem}.gz)")


def parse_idx(path: Path, raw: bytes, magic: int) -> np.ndarray:
    """The uint8 array in an IDX file's bytes, after checking its magic number and length."""
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: {len(raw)} bytes is too short for an IDX header")
    (found,) = struct.unpack(">I", raw[:4])
    if found != magic:
        raise DataError(f"{path}: IDX magic number is 0x{found:08x}, expected 0x{magic:08x}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + math.prod(dims)
    if len(raw) != expected:
        raise DataError(f"{path}: {len(raw)} bytes, expected {expected} for an IDX array of "
                        f"shape {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def mnist(split: str, name: str, path: Path) -> ArrayDataset:
    """MNIST's train (60,000) or t10k (10,000) split from the IDX files in directory `path`."""
    (images_path, images_raw), (labels_path, labels_raw) = (read_bytes(path, stem)
                                                            for stem in FILES[split])
    images = parse_idx(images_path, images_raw, IMAGES_MAGIC)  # (N, H, W) uint8
    labels = parse_idx(labels_path, labels_raw, LABELS_MAGIC)  # (N,) uint8
    if len(images) != len(labels):
        raise DataError(f"{labels_path}: {len(labels)} labels for {len(images)} images in "
                        f"{images_path.name}")
    if len(images) and labels.max() >= NUM_CLASSES:
        bad = int(np.argmax(labels >= NUM_CLASSES))
        raise DataError(f"{labels_path}: label {labels[bad]} of item {bad} is outside 0..9")
    return ArrayDataset(images[:, None], labels.astype(np.int64),
                        [str(k) for k in range(NUM_CLASSES)], name)
