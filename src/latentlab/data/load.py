"""`load_dataset`: from a spec string to one split of a dataset."""

from __future__ import annotations

from collections.abc import Callable

from latentlab.data.base import LatentlabDataset
from latentlab.data.builtin import digits, faces, mixture
from latentlab.data.cifar import Cifar10
from latentlab.data.folder import ImageFolder
from latentlab.data.mnist import mnist
from latentlab.data.npz import npz
from latentlab.data.shapes import shapes
from latentlab.data.spec import parse_spec
from latentlab.data.splits import check_split

# kind -> loader(split, name, **options); the options of each kind are declared in spec.KINDS
LOADERS: dict[str, Callable[..., LatentlabDataset]] = {
    "digits": digits,
    "mixture": mixture,
    "shapes": shapes,
    "faces": faces,
    "folder": ImageFolder,
    "npz": npz,
    "mnist": mnist,
    "cifar10": Cifar10,
}


def load_dataset(spec: str, split: str = "train", skip_corrupt: bool = False) -> LatentlabDataset:
    """One split of the dataset a spec string names (grammar in `latentlab.data.spec`).

    Args:
        spec: e.g. "digits", "mixture:k=8,d=10", "folder:/data/imgs,resize=32", "/x/data.npz".
        split: "train" or "test".
        skip_corrupt: replace corrupt image files by the next readable one, counted in
            `Batch.skipped`, instead of raising (only image folders decode lazily, so only they
            can meet a corrupt file after loading).

    Returns:
        The dataset, named `f"{spec}[{split}]"`.

    Raises:
        DataError: the spec does not parse, or the data cannot be read; one line naming why.
    """
    check_split(split)
    parsed = parse_spec(spec)
    options = dict(parsed.options)
    if parsed.kind == "folder":
        options["skip_corrupt"] = skip_corrupt
    return LOADERS[parsed.kind](split=split, name=f"{spec}[{split}]", **options)
