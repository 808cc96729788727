"""What every latentlab dataset is: items, batches, and the facts a model needs about them.

Images follow `latentlab.pixels`: float32 (C, H, W) in [-1, 1]. Vector data (the mixture toy) is
float32 (D,). Labels are int64 in [0, num_classes); an unlabelled dataset has num_classes == 0
and every label is -1.

Legend: B batch, C channels, H height, W width, D vector size, N items.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from latentlab import pixels
from latentlab.errors import DataError

UNLABELLED = -1
EVAL_BATCH = 256  # items per batch of `eval_batches`


@dataclass(frozen=True)
class Scenes:
    """What the caption of each item of a synthetic dataset was written from, so a judge can
    check a generated image against its prompt attribute by attribute.

    Attributes:
        objects: (N, K, A) int64, per object the index of each attribute's value in `names`
            (attribute a's values are `list(names.values())[a]`); rows of -1 past the last
            object of an item.
        stated: (N, K, A) bool, True where the caption states that attribute of that object.
        relations: (N, K) int64, the relation (an index into `names["relation"]` where the data
            has relations) that the caption states between object k - 1 and object k, read in
            caption order: r at k says "object k - 1 is names["relation"][r] object k" ("a red
            circle left of a blue square": the circle is object k - 1); -1 none.
        names: attribute name -> the names of its values, in column order of `objects`.
        held_out: (N,) bool, True where the item holds an attribute combination held out of
            the training split (only a test split has any); all False when not given.
    """

    objects: np.ndarray
    stated: np.ndarray
    relations: np.ndarray
    names: dict[str, list[str]]
    held_out: np.ndarray | None = None

    def __post_init__(self):
        if self.held_out is None:  # frozen: set the default the one way a frozen dataclass can
            object.__setattr__(self, "held_out", np.zeros(len(self.objects), dtype=bool))

    def __len__(self) -> int:
        return len(self.objects)

    def subset(self, idx) -> Scenes:
        return Scenes(self.objects[idx], self.stated[idx], self.relations[idx], self.names,
                      self.held_out[idx])


@dataclass(frozen=True)
class Batch:
    """A batch as the training loop sees it.

    Attributes:
        x: (B, C, H, W) or (B, D) float32.
        y: (B,) int64 labels, -1 where the dataset is unlabelled.
        skipped: corrupt items replaced in this batch (only with `skip_corrupt`).
    """

    x: torch.Tensor
    y: torch.Tensor
    skipped: int = 0

    def to(self, device: torch.device | str, memory_format=torch.preserve_format) -> Batch:
        x = self.x.to(device, non_blocking=True)
        if x.ndim == 4:
            x = x.contiguous(memory_format=memory_format)
        return Batch(x, self.y.to(device, non_blocking=True), self.skipped)


def collate(batch: Batch) -> Batch:
    """DataLoader `collate_fn` for datasets whose `__getitems__` already returns a Batch."""
    return batch


class LatentlabDataset(Dataset):
    """Base class: subclasses give `__len__`, `load(i) -> (x, y)` and the metadata below.

    Attributes:
        name: the spec string the dataset was made from, with its split.
        shape: the shape of one item, (C, H, W) or (D,).
        class_names: one name per class; empty when unlabelled.
    """

    name: str
    shape: tuple[int, ...]
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3

    def load(self, i: int) -> tuple[torch.Tensor, int]:
        raise NotImplementedError

    def caption(self, i: int) -> str | None:
        """A text description of item i, where the dataset has one."""
        return None

    @property
    def captioned(self) -> bool:
        """Whether `caption` gives text for every item (cheap: reads nothing)."""
        return False

    @property
    def scenes(self) -> Scenes | None:
        """The structured attributes behind the captions, where the dataset has them."""
        return None

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.load(i)
        return x, torch.tensor(y, dtype=torch.int64)

    def __getitems__(self, indices: list[int]) -> Batch:
        items = [self.load(i) for i in indices]
        x = torch.stack([x for x, _ in items])
        y = torch.tensor([y for _, y in items], dtype=torch.int64)
        return Batch(x, y)

    def fingerprint(self) -> str:
        """A short hash that changes when the dataset's identity or size changes."""
        key = f"{self.name}|{len(self)}|{self.shape}|{self.class_names}"
        return hashlib.sha256(key.encode()).hexdigest()[:16]


class ArrayDataset(LatentlabDataset):
    """An in-memory dataset from arrays, checked once when it is made.

    Args:
        data: (N, C, H, W) uint8 or float32 already in [-1, 1], or (N, D) float32 vectors.
        labels: (N,) int64, or None for unlabelled data.
        class_names: one name per class (labels must lie in range).
        name: the spec string, used in messages and fingerprints.
        captions: optional text per item.
        scenes: optional structured attributes per item (see `Scenes`).
    """

    def __init__(self, data, labels, class_names: list[str], name: str,
                 captions: list[str] | None = None, scenes: Scenes | None = None):
        data = torch.as_tensor(data)
        if len(data) == 0:
            raise DataError(f"{name}: the dataset is empty")
        if data.dtype != torch.uint8:
            data = data.to(torch.float32)
            if not torch.isfinite(data).all():
                bad = int((~torch.isfinite(data)).flatten(1).any(1).nonzero()[0])
                raise DataError(f"{name}: item {bad} contains NaN or inf")
        n = len(data)
        if labels is None:
            labels = np.full(n, UNLABELLED)
            class_names = []
        labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
        if labels.shape != (n,):
            raise DataError(f"{name}: labels must be ({n},), got {tuple(labels.shape)}")
        if class_names and (labels.min() < 0 or labels.max() >= len(class_names)):
            bad = int(((labels < 0) | (labels >= len(class_names))).nonzero()[0])
            raise DataError(f"{name}: label {int(labels[bad])} of item {bad} is outside "
                            f"[0, {len(class_names)})")
        self.data, self.labels = data, labels
        self.class_names = list(class_names)
        self.name = name
        self.shape = tuple(data.shape[1:])
        self.captions = captions
        if captions is not None and len(captions) != n:
            raise DataError(f"{name}: {len(captions)} captions for {n} items")
        if scenes is not None and len(scenes) != n:
            raise DataError(f"{name}: attributes of {len(scenes)} items for {n} items")
        self._scenes = scenes

    @property
    def scenes(self) -> Scenes | None:
        return self._scenes

    @property
    def captioned(self) -> bool:
        return self.captions is not None

    def __len__(self) -> int:
        return len(self.data)

    def _pixels(self, x: torch.Tensor) -> torch.Tensor:
        return pixels.from_uint8(x) if x.dtype == torch.uint8 else x

    def load(self, i: int) -> tuple[torch.Tensor, int]:
        return self._pixels(self.data[i]), int(self.labels[i])

    def __getitems__(self, indices: list[int]) -> Batch:
        # one indexing op instead of B python calls: small built-ins are fed at memory speed
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return Batch(self._pixels(self.data[idx]), self.labels[idx])

    def caption(self, i: int) -> str | None:
        return self.captions[i] if self.captions is not None else None


def eval_batches(data: LatentlabDataset, device: torch.device | str,
                 memory_format=torch.contiguous_format):
    """The whole of `data` in order, in batches, on `device`."""
    sampler = [list(range(i, min(i + EVAL_BATCH, len(data))))
               for i in range(0, len(data), EVAL_BATCH)]
    for batch in DataLoader(data, batch_sampler=sampler, collate_fn=collate):
        yield batch.to(device, memory_format)
