"""CIFAR-10, binary version, read lazily from its files with np.memmap.

Each record is 1 label byte then 3072 pixel bytes: the red, green and blue 32x32 planes, each
row-major, which is already (C, H, W) order.

Legend: N records, C channels, H height, W width.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from latentlab import pixels
from latentlab.data.base import LatentlabDataset
from latentlab.errors import DataError

TRAIN_FILES = tuple(f"data_batch_{k}.bin" for k in range(1, 6))
FILES = {"train": TRAIN_FILES, "test": ("test_batch.bin",)}
SHAPE = (3, 32, 32)
RECORD = 1 + 3 * 32 * 32  # bytes
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck"]


def class_names(directory: Path) -> list[str]:
    """The ten names from `batches.meta.txt` when the directory has it, else the usual ones."""
    meta = directory / "batches.meta.txt"
    if not meta.is_file():
        return list(CLASS_NAMES)
    names = [line.strip() for line in meta.read_text().splitlines() if line.strip()]
    if len(names) != len(CLASS_NAMES):
        raise DataError(f"{meta}: {len(names)} class names, expected {len(CLASS_NAMES)}")
    return names


def _records(path: Path) -> np.memmap:
    """(N, RECORD) uint8 view of one batch file, checked for a whole number of records."""
    if not path.is_file():
        raise DataError(f"{path}: missing CIFAR-10 batch file")
    size = path.stat().st_size
    if size == 0 or size % RECORD:
        raise DataError(f"{path}: {size} bytes is not a whole number of {RECORD}-byte records "
                        f"(truncated or not the CIFAR-10 binary version?)")
    return np.memmap(path, dtype=np.uint8, mode="r", shape=(size // RECORD, RECORD))


class Cifar10(LatentlabDataset):
    """CIFAR-10 binary batches; pixels are read from disk per item, labels are read once.

    Args:
        split: "train" (data_batch_1..5.bin) or "test" (test_batch.bin).
        name: the spec string with its split.
        path: the directory holding the .bin files (`cifar-10-batches-bin`).
    """

    def __init__(self, split: str, name: str, path: Path):
        self.paths = [Path(path) / f for f in FILES[split]]
        maps = [_records(p) for p in self.paths]
        self.starts = np.cumsum([0] + [len(m) for m in maps])  # item index where each file starts
        self.labels = np.concatenate([np.asarray(m[:, 0]) for m in maps]).astype(np.int64)
        if self.labels.max() >= len(CLASS_NAMES):
            bad = int(np.argmax(self.labels >= len(CLASS_NAMES)))
            f = int(np.searchsorted(self.starts, bad, side="right")) - 1
            raise DataError(f"{self.paths[f]}: label {self.labels[bad]} of record "
                            f"{bad - self.starts[f]} is outside 0..9")
        self.class_names = class_names(Path(path))
        self.name, self.shape = name, SHAPE
        self._maps: list[np.memmap] | None = None

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getstate__(self) -> dict:
        # a pickled memmap is a full in-memory copy; DataLoader workers reopen the files instead
        return {**self.__dict__, "_maps": None}

    def load(self, i: int) -> tuple[torch.Tensor, int]:
        if self._maps is None:
            self._maps = [_records(p) for p in self.paths]
        f = int(np.searchsorted(self.starts, i, side="right")) - 1
        record = np.array(self._maps[f][i - self.starts[f], 1:])  # copy out of the file
        return pixels.from_uint8(torch.from_numpy(record).view(SHAPE)), int(self.labels[i])
