"""Train/test splits that never change between runs: same data, same seed, same indices.

Legend: N items.
"""

from __future__ import annotations

import numpy as np

from latentlab.errors import DataError

SPLITS = ("train", "test")
SPLIT_SEED = 0  # fixes every built-in train/test split


def check_split(split: str) -> None:
    """Raise DataError unless `split` is one of SPLITS."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")


def stratified_indices(labels: np.ndarray, split: str, test_size: float = 0.2) -> np.ndarray:
    """Indices of `split` in a fixed stratified split of (N,) labels (built-in datasets)."""
    from sklearn.model_selection import train_test_split  # here: sklearn takes ~1 s to import

    train, test = train_test_split(np.arange(len(labels)), test_size=test_size, stratify=labels,
                                   random_state=SPLIT_SEED)
    return train if split == "train" else test


def holdout_indices(n: int, split: str, test_fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of `split` in a seeded random holdout of n items (on-disk datasets).

    The test split takes round(n * test_fraction) items, at least one when n >= 2; indices are
    sorted within a split so that reading them in order walks the files in order.
    """
    n_test = min(max(round(n * test_fraction), 1), n - 1) if n >= 2 else 0
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_test:] if split == "train" else order[:n_test])
