"""Images in a user's .npz archive, read without ever unpickling it.

Arrays: `images` (N, H, W) or (N, H, W, C) with C in {1, 3, 4} (alpha is dropped), uint8 in
[0, 255] or float in [0, 1]; optional `labels` (N,) non-negative ints; optional `class_names`
(K,) str; optional `images_test` / `labels_test` for the test split, otherwise a seeded 90/10
holdout of `images`.

Legend: N images, C channels, H height, W width, K classes.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from einops import rearrange

from latentlab import pixels
from latentlab.data.base import ArrayDataset
from latentlab.data.splits import holdout_indices
from latentlab.errors import DataError

CHANNELS = (1, 3, 4)


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array in the archive, loaded with allow_pickle=False."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except AttributeError:  # np.load gave a plain array: a .npy file, not an archive
        raise DataError(f"{path}: not an .npz archive") from None
    except ValueError as e:  # object arrays need pickle, which a data file must never run
        raise DataError(f"{path}: cannot read without unpickling ({e})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: cannot read .npz archive ({e})") from None


def images_nchw(path: Path, key: str, images: np.ndarray):
    """(N, H, W[, C]) uint8 or float [0, 1] -> (N, C, H, W) uint8, or float32 in [-1, 1]."""
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in CHANNELS:
        raise DataError(f"{path}: '{key}' has shape {images.shape}; expected (N, H, W) or "
                        f"(N, H, W, C) with C in {CHANNELS}")
    if len(images) == 0:
        raise DataError(f"{path}: '{key}' holds no images")
    images = rearrange(images[..., :3], "n h w c -> n c h w")  # C = 4 loses its alpha
    if images.dtype == np.uint8:
        return np.ascontiguousarray(images)
    if images.dtype.kind != "f":
        raise DataError(f"{path}: '{key}' has dtype {images.dtype}; images must be uint8 in "
                        f"[0, 255] or float in [0, 1]")
    flat = images.reshape(len(images), -1)
    bad = ~np.isfinite(flat).all(axis=1)
    if bad.any():
        raise DataError(f"{path}: {key}[{int(np.argmax(bad))}] contains NaN or inf")
    lo, hi = flat.min(axis=1), flat.max(axis=1)
    outside = (lo < 0) | (hi > 1)
    if outside.any():
        i = int(np.argmax(outside))
        raise DataError(f"{path}: {key}[{i}] has values in [{lo[i]:.4g}, {hi[i]:.4g}]; float "
                        f"images must lie in [0, 1] (or store uint8 in [0, 255])")
    return pixels.from_unit(images)


def checked_labels(path: Path, key: str, labels: np.ndarray, n: int) -> np.ndarray:
    """(N,) non-negative integer labels as int64."""
    if labels.shape != (n,) or labels.dtype.kind not in "iu":
        raise DataError(f"{path}: '{key}' must be ({n},) integers, got {labels.shape} "
                        f"{labels.dtype}")
    if n and labels.min() < 0:
        i = int(np.argmax(labels < 0))
        raise DataError(f"{path}: {key}[{i}] is {labels[i]}; labels must be >= 0")
    return labels.astype(np.int64)


def class_names(path: Path, arrays: dict[str, np.ndarray], label_keys: list[str]) -> list[str]:
    """`class_names` if the archive has them (every label must then be in range), else 0..max."""
    if "class_names" not in arrays:
        top = max(int(arrays[key].max(initial=-1)) for key in label_keys)
        return [str(k) for k in range(top + 1)]
    names = arrays["class_names"]
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise DataError(f"{path}: 'class_names' must be a 1-D array of str, got {names.shape} "
                        f"{names.dtype}")
    for key in label_keys:
        if arrays[key].size and arrays[key].max() >= len(names):
            i = int(np.argmax(arrays[key] >= len(names)))
            raise DataError(f"{path}: {key}[{i}] is {arrays[key][i]}, outside [0, {len(names)}) "
                            f"for its {len(names)} class_names")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]


def npz(split: str, name: str, path: Path, test_fraction: float, seed: int) -> ArrayDataset:
    """One split of an .npz archive (see the module docstring for its arrays)."""
    arrays = read_arrays(path)
    if "images" not in arrays:
        raise DataError(f"{path}: no 'images' array (found: {', '.join(arrays) or 'none'})")
    has_test = "images_test" in arrays
    label_keys = ["labels", "labels_test"] if has_test else ["labels"]
    missing = [k for k in label_keys if k not in arrays]
    if missing and len(missing) < len(label_keys):  # the two splits must agree on having labels
        raise DataError(f"{path}: has labels for one split but no '{missing[0]}'")
    labelled = not missing
    for key in label_keys if labelled else []:
        images_key = key.replace("labels", "images")
        arrays[key] = checked_labels(path, key, arrays[key], len(arrays[images_key]))
    key = "images_test" if has_test and split == "test" else "images"
    images = images_nchw(path, key, arrays[key])
    labels = arrays[key.replace("images", "labels")] if labelled else None
    names = class_names(path, arrays, label_keys) if labelled else []
    if not has_test:
        idx = holdout_indices(len(images), split, test_fraction, seed)
        images, labels = images[idx], (labels[idx] if labelled else None)
    return ArrayDataset(images, labels, names, name)
