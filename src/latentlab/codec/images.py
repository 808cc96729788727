"""Image files in and out of the codec: reading with an explicit channel policy, PNG writing,
and the names the container records.

Channel policy (the model codes C = 1 grey or C = 3 RGB channels):
- a grey image given to an RGB model is repeated into three equal channels (lossless);
- a colour image given to a grey model is refused, unless its three channels are equal
  (then it is grey, and one channel is taken): the codec never throws colour away silently;
- an alpha channel is dropped when fully opaque and refused otherwise (the codec stores none);
- palette and other modes are converted to RGB (or to L when the palette is grey) first.
Decoded images have the model's C channels and are written as 8-bit PNG.

Legend: H W image height and width, C channels.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from latentlab.codec.container import MAX_NAME, CodecError
from latentlab.data.folder import GREY_MODES, opened
from latentlab.io import atomic_path


def read_image(path: str | os.PathLike, channels: int) -> np.ndarray:
    """The image file at `path` as (H, W, C) uint8 with C = `channels` (module docstring).

    Raises:
        DataError: the file is missing or cannot be decoded (one line naming it).
        CodecError: its channels or alpha do not fit the policy.
    """
    path = Path(path)
    if not path.is_file():
        raise CodecError(f"{path}: no such image file")
    with opened(path) as image:
        array = _pixels(image, path)  # (H, W, C') uint8, C' in {1, 3}
    if array.shape[2] == channels:
        return array
    if channels == 3:
        return np.repeat(array, 3, axis=2)
    if (array == array[..., :1]).all():
        return np.ascontiguousarray(array[..., :1])
    raise CodecError(f"{path}: a colour image, but the model codes grey images; convert it to "
                     "grey first (the codec does not drop colour silently)")


def _pixels(image: Image.Image, path: Path) -> np.ndarray:
    """Decoded pixels (H, W, 1 or 3) uint8 of an opened image; alpha checked and dropped."""
    alpha = None
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        alpha = np.asarray(image.getchannel("A"))
    grey = image.mode in GREY_MODES or image.mode in ("LA", "La")
    array = np.asarray(image.convert("L" if grey else "RGB"))  # reads every pixel
    if alpha is not None and (alpha < 255).any():
        raise CodecError(f"{path}: has transparency; the codec stores no alpha channel")
    return array[..., None] if array.ndim == 2 else array


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write (H, W, C) uint8 as an 8-bit PNG, atomically."""
    assert image.ndim == 3 and image.dtype == np.uint8, f"got {image.dtype} {image.shape}"
    pil = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image)
    with atomic_path(path) as tmp:
        pil.save(tmp, format="PNG")
    return Path(path)


def safe_name(stem: str) -> str:
    """A file stem reduced to [A-Za-z0-9._-], not starting with '.', at most MAX_NAME bytes."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[:MAX_NAME].lstrip(".")
    return name


def names_for(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Distinct safe names for image files: their stems, '-2', '-3'... appended to repeats."""
    names, seen = [], set()
    for i, path in enumerate(paths):
        base = safe_name(Path(path).stem) or f"image-{i:04d}"
        name, k = base, 1
        while name in seen:
            k += 1
            name = f"{base[:MAX_NAME - 8]}-{k}"
        seen.add(name)
        names.append(name)
    return names


def output_name(name: str, index: int) -> str:
    """The PNG file name of decoded image `index` recorded under `name` ('' = by index)."""
    return f"{name or f'image-{index:04d}'}.png"
