"""A folder of image files, indexed once and decoded lazily, one file per `load`.

Layouts (hidden entries, starting with '.', are ignored; other non-image files too):

    root/cat/1.png, root/dog/2.jpg      class sub-folders: labels in sorted name order
    root/1.png, root/2.png              flat: unlabelled
    root/train/..., root/test/...       either of the above per split; otherwise a seeded
                                        holdout of the whole folder is the test split

Captions, where the folder has them (NAME.txt beside NAME.png, or a captions.jsonl), are read
when the dataset is made; see `latentlab.data.folder_captions`.

Files are ordered by a depth-first walk with the entries of each folder sorted by name. Only
the first image is opened when the dataset is made (its size and mode fix the item shape), so a
folder of a million images opens in seconds and DataLoader workers decode in parallel.

Legend: C channels, H height, W width.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image, UnidentifiedImageError

from latentlab import pixels
from latentlab.data.base import UNLABELLED, Batch, LatentlabDataset
from latentlab.data.folder_captions import CaptionError, read_captions
from latentlab.data.splits import holdout_indices
from latentlab.errors import DataError

EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})


class CorruptImage(DataError):
    """An image file that cannot be decoded (the one error `skip_corrupt` skips)."""


def is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in EXTENSIONS


def walk(top: Path, rel: str = "") -> Iterator[str]:
    """Image paths under `top`, relative to it, depth-first with each folder sorted by name."""
    with os.scandir(top / rel) as scan:
        entries = sorted((e for e in scan if not e.name.startswith(".")), key=lambda e: e.name)
    for entry in entries:
        path = f"{rel}/{entry.name}" if rel else entry.name
        if entry.is_dir():
            yield from walk(top, path)
        elif is_image(entry.name):
            yield path


def subfolders(top: Path) -> list[str]:
    """Sorted names of the visible sub-folders of `top` (none when it does not exist)."""
    if not top.is_dir():
        return []
    with os.scandir(top) as scan:
        return sorted(e.name for e in scan if e.is_dir() and not e.name.startswith("."))


def index(top: Path, class_names: list[str]) -> tuple[list[str], np.ndarray]:
    """Every image under `top` (relative paths) and its label, from its class sub-folder."""
    if not class_names:
        files = list(walk(top))
        return files, np.full(len(files), UNLABELLED, dtype=np.int64)
    with os.scandir(top) as scan:
        loose = sorted(e.name for e in scan if e.is_file() and is_image(e.name))
    if loose:
        raise DataError(f"{top / loose[0]}: an image beside class sub-folders; put every image "
                        f"in a class folder, or none")
    files, labels = [], []
    for label, name in enumerate(class_names):
        if (top / name).is_dir():
            found = [f"{name}/{rel}" for rel in walk(top / name)]
            files += found
            labels += [label] * len(found)
    return files, np.array(labels, dtype=np.int64)


@contextlib.contextmanager
def opened(path: Path) -> Iterator[Image.Image]:
    """The image at `path`, opened with PIL; any failure to read it becomes CorruptImage."""
    try:
        with Image.open(path) as image:
            yield image
    except UnidentifiedImageError:  # its message repeats the path: keep the message one short line
        raise CorruptImage(f"{path}: cannot decode image (cannot identify image file)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise CorruptImage(f"{path}: cannot decode image ({e})") from None


def decode(path: Path, mode: str) -> Image.Image:
    """The image at `path` fully decoded and converted to `mode`, or CorruptImage."""
    with opened(path) as image:
        return image.convert(mode)  # convert() reads every pixel: truncation shows up here


def probe(path: Path) -> tuple[tuple[int, int], str]:
    """(height, width) and mode from an image's header alone, or CorruptImage."""
    with opened(path) as image:
        return (image.height, image.width), image.mode


class ImageFolder(LatentlabDataset):
    """One split of a folder of images (see the module docstring for layouts).

    Args:
        split: "train" or "test".
        name: the spec string with its split.
        path: the folder.
        resize: (H, W) to resize every image to (bicubic); None requires one size for all.
        channels: 1 (grey) or 3 (RGB); None takes it from the first image's mode.
        test_fraction: share of the test split when the folder has no train/ and test/.
        seed: seeds that holdout.
        skip_corrupt: replace a corrupt image, or one whose caption is missing, empty or
            undecodable, by the next good one instead of raising.
    """

    def __init__(self, split: str, name: str, path: Path, resize: tuple[int, int] | None = None,
                 channels: int | None = None, test_fraction: float = 0.1, seed: int = 0,
                 skip_corrupt: bool = False):
        root = Path(path)
        presplit = (root / "train").is_dir() and (root / "test").is_dir()
        tops = [root / "train", root / "test"] if presplit else [root]
        self.top = root / split if presplit else root
        self.class_names = sorted(set().union(*(subfolders(t) for t in tops)))
        files, self.labels = index(self.top, self.class_names)
        if not files:
            raise DataError(f"{self.top}: no images found (extensions: "
                            f"{', '.join(sorted(EXTENSIONS))})")
        if not presplit:
            keep = holdout_indices(len(files), split, test_fraction, seed)
            files, self.labels = [files[i] for i in keep], self.labels[keep]
            if not files:
                raise DataError(f"{root}: no images left for the {split} split")
        self.files, self.name, self.resize = files, name, resize is not None
        self.skip_corrupt, self._warned = skip_corrupt, set()
        self.captions, self._uncaptioned = self._captions(root)
        # the train split's first readable image fixes the size and mode of both splits
        size, mode, self.first = self._reference(tops[0])
        self.size = resize or size
        self.mode = "L" if (channels or (1 if mode in GREY_MODES else 3)) == 1 else "RGB"
        self.shape = (1 if self.mode == "L" else 3, *self.size)

    def _reference(self, train_top: Path) -> tuple[tuple[int, int], str, Path]:
        """(height, width), mode and path of the first readable image of the train split."""
        for rel in walk(train_top):
            try:
                return (*probe(train_top / rel), train_top / rel)
            except CorruptImage as e:
                if not self.skip_corrupt:
                    raise
                self._warn(e)
        raise DataError(f"{train_top}: no readable image")

    def _captions(self, root: Path) -> tuple[list[str] | None, dict[int, CaptionError]]:
        """Each file's caption (None when the folder has none) and the errors of the files
        whose caption is missing, empty or undecodable (only kept with skip_corrupt)."""
        found = read_captions(root, self.top, self.files)
        if found is None:
            return None, {}
        bad = {i: c for i, c in enumerate(found) if isinstance(c, CaptionError)}
        if bad and not self.skip_corrupt:
            raise next(iter(bad.values()))
        if len(bad) == len(found):
            raise DataError(f"{self.top}: no image with a usable caption")
        return [c if isinstance(c, str) else "" for c in found], bad

    @property
    def captioned(self) -> bool:
        return self.captions is not None

    def caption(self, i: int) -> str | None:
        """Item i's caption; with skip_corrupt, that of the item `load(i)` falls back to when
        i's caption is unusable (a corrupt image is only found out by decoding it, so its
        replacement is not followed here)."""
        if self.captions is None:
            return None
        while i in self._uncaptioned:
            i = (i + 1) % len(self)
        return self.captions[i]

    def __len__(self) -> int:
        return len(self.files)

    def _warn(self, error: DataError) -> None:
        if str(error) not in self._warned:  # once per file (and per DataLoader worker)
            self._warned.add(str(error))
            what = "image without a caption" if isinstance(error, CaptionError) else "corrupt image"
            warnings.warn(f"skipping {what}: {error}", stacklevel=3)

    def _decode(self, i: int) -> torch.Tensor:
        """Item i as (C, H, W) float32 in [-1, 1]; CorruptImage or DataError names the file."""
        path = self.top / self.files[i]
        image = decode(path, self.mode)
        h, w = self.size
        if (image.height, image.width) != self.size:
            if not self.resize:
                raise DataError(f"{path}: image is {image.height}x{image.width} (HxW), expected "
                                f"{h}x{w} like {self.first}; add resize={h} or resize={h}x{w} "
                                f"to the dataset spec")
            image = image.resize((w, h), Image.Resampling.BICUBIC)
        array = np.array(image)  # (H, W) or (H, W, 3) uint8
        chw = array[None] if array.ndim == 2 else rearrange(array, "h w c -> c h w")
        return pixels.from_uint8(torch.from_numpy(np.ascontiguousarray(chw)))

    def _load_or_next(self, i: int) -> tuple[torch.Tensor, int, bool]:
        """Item i, or with skip_corrupt the next readable one after it; and whether it skipped."""
        for step in range(len(self)):
            j = (i + step) % len(self)
            if j in self._uncaptioned:  # only with skip_corrupt: skipped like a corrupt image
                self._warn(self._uncaptioned[j])
                continue
            try:
                return self._decode(j), int(self.labels[j]), step > 0
            except CorruptImage as e:
                if not self.skip_corrupt:
                    raise
                self._warn(e)
        raise DataError(f"{self.top}: no readable image")

    def load(self, i: int) -> tuple[torch.Tensor, int]:
        x, y, _ = self._load_or_next(i)
        return x, y

    def __getitems__(self, indices: list[int]) -> Batch:
        items = [self._load_or_next(i) for i in indices]
        x = torch.stack([x for x, _, _ in items])  # (B, C, H, W)
        y = torch.tensor([y for _, y, _ in items], dtype=torch.int64)
        return Batch(x, y, skipped=sum(skipped for _, _, skipped in items))
