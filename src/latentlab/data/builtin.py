"""Datasets that ship with the install: no download, deterministic splits."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from latentlab.data.base import ArrayDataset

SPLIT_SEED = 0  # fixes every built-in train/test split


def digits(split: str, name: str) -> ArrayDataset:
    """scikit-learn's 8x8 handwritten digits (values 0..16), stratified 80/20 split."""
    d = load_digits()
    images = (d.images.astype(np.float32) / 16.0) * 2.0 - 1.0  # (N, 8, 8) in [-1, 1]
    idx = train_test_split(np.arange(len(images)), test_size=0.2, stratify=d.target,
                           random_state=SPLIT_SEED)[0 if split == "train" else 1]
    return ArrayDataset(images[idx, None], d.target[idx], [str(k) for k in range(10)], name)
