"""Datasets named by spec strings (see `load_dataset`), in the pixel convention of `pixels`."""

from latentlab.data.base import ArrayDataset, Batch, LatentlabDataset, collate
from latentlab.data.builtin import digits


def load_dataset(spec: str, split: str = "train", skip_corrupt: bool = False) -> LatentlabDataset:
    """Temporary: only `digits` until the spec parser lands."""
    return digits(split, f"{spec}[{split}]")


__all__ = ["ArrayDataset", "Batch", "LatentlabDataset", "collate", "load_dataset"]
