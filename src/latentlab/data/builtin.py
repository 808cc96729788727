"""Datasets that ship with the install: no download, deterministic splits.

The procedurally drawn `shapes` live in `latentlab.data.shapes`.

Legend: N items, K clusters, D vector size, S image side.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from skimage.data import lfw_subset

from latentlab import pixels
from latentlab.data.base import ArrayDataset
from latentlab.data.splits import SPLIT_SEED, stratified_indices

__all__ = ["SPLIT_SEED", "digits", "faces", "mixture", "mixture_centres", "mixture_embedding"]


def digits(split: str, name: str) -> ArrayDataset:
    """scikit-learn's 8x8 handwritten digits (values 0..16), stratified 80/20 split."""
    from sklearn.datasets import load_digits  # here: sklearn takes ~1 s to import

    d = load_digits()
    images = (d.images.astype(np.float32) / 16.0) * 2.0 - 1.0  # (N, 8, 8) in [-1, 1]
    idx = stratified_indices(d.target, split)
    return ArrayDataset(images[idx, None], d.target[idx], [str(k) for k in range(10)], name)


def _mixture_seeds(seed: int) -> dict[str, np.random.SeedSequence]:
    # independent streams derived from one seed: the embedding is shared, the draws are not
    embed, train, test = np.random.SeedSequence(seed).spawn(3)
    return {"embed": embed, "train": train, "test": test}


def mixture_embedding(d: int, seed: int) -> np.ndarray:
    """The fixed (D, 2) map with orthonormal columns that lifts the 2-D toy into D dimensions."""
    gaussian = np.random.default_rng(_mixture_seeds(seed)["embed"]).standard_normal((d, 2))
    q, _ = np.linalg.qr(gaussian)  # (D, 2), q.T @ q = I, so 2-D distances are preserved
    return q


def mixture_centres(k: int, d: int, seed: int) -> np.ndarray:
    """(K, D) cluster centres: the K-th roots of unity on the unit circle, embedded in D dims."""
    angles = 2 * math.pi * np.arange(k) / k
    circle = np.stack([np.cos(angles), np.sin(angles)], axis=1)  # (K, 2)
    return circle @ mixture_embedding(d, seed).T


def mixture(split: str, name: str, k: int, d: int, std: float, n: int, seed: int) -> ArrayDataset:
    """The DAE paper's toy (section 6.1): K Gaussians on the unit circle, embedded in D dims.

    Each item is an equal-weight draw: a cluster index (the label), its centre on the unit circle
    plus isotropic 2-D noise of standard deviation `std`, mapped to D dims by
    `mixture_embedding`. The train split has n items, the test split n // 4 (at least one).
    """
    size = n if split == "train" else max(1, n // 4)
    rng = np.random.default_rng(_mixture_seeds(seed)[split])
    labels = rng.integers(k, size=size)  # (N,)
    angles = 2 * math.pi * labels / k
    points = np.stack([np.cos(angles), np.sin(angles)], axis=1)  # (N, 2)
    points += std * rng.standard_normal((size, 2))
    vectors = points @ mixture_embedding(d, seed).T  # (N, D)
    return ArrayDataset(vectors.astype(np.float32), labels, [str(c) for c in range(k)], name)


FACE_NAMES = ["non-face", "face"]


def faces(split: str, name: str, size: int) -> ArrayDataset:
    """scikit-image's LFW subset: 100 faces, then 100 non-faces, 25x25 grey, stratified 80/20.

    Resized to (1, S, S) with bicubic interpolation (clamped: bicubic overshoots at edges).
    """
    images = np.asarray(lfw_subset())  # (200, 25, 25); floats in [0, 1] (its docstring says uint8)
    if images.dtype == np.uint8:
        images = images / 255.0
    half = len(images) // 2
    labels = np.r_[np.ones(half), np.zeros(len(images) - half)].astype(np.int64)  # faces first
    x = torch.as_tensor(images, dtype=torch.float32)[:, None]  # (N, 1, 25, 25)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    idx = stratified_indices(labels, split)
    return ArrayDataset(pixels.from_unit(x[idx]), labels[idx], FACE_NAMES, name)
