"""Check a dataset item by item and summarise it, before any training run depends on it.

Items are read in batches of `CHUNK`, so checking a large image folder decodes every file
without ever holding the folder in memory.

Legend: B batch, C channels, H height, W width, D vector size.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import torch

from latentlab import pixels
from latentlab.data.base import UNLABELLED, LatentlabDataset
from latentlab.data.load import load_dataset
from latentlab.data.spec import parse_spec
from latentlab.data.splits import SPLITS
from latentlab.errors import DataError
from latentlab.io import atomic_path

CHUNK = 256  # items decoded at once
GRID_ITEMS = 64
SCATTER_ITEMS = 10_000
TOLERANCE = 1e-6  # float rounding allowed beyond [-1, 1]


def check_chunk(data: LatentlabDataset, x: torch.Tensor, y: torch.Tensor, start: int) -> None:
    """Raise DataError naming the first bad item of a chunk: (B, *shape) x and (B,) y."""
    if tuple(x.shape[1:]) != data.shape:
        raise DataError(f"{data.name}: items from {start} have shape {tuple(x.shape[1:])}, "
                        f"expected {data.shape}")
    flat = x.flatten(1)
    checks = [(~torch.isfinite(flat).all(1), "contains NaN or inf")]
    if data.is_image:
        outside = (flat < pixels.LOW - TOLERANCE) | (flat > pixels.HIGH + TOLERANCE)
        checks.append((outside.any(1), f"has values outside [{pixels.LOW}, {pixels.HIGH}]"))
    if data.num_classes:
        checks.append(((y < 0) | (y >= data.num_classes),
                       f"has a label outside [0, {data.num_classes})"))
    else:
        checks.append((y != UNLABELLED, f"has a label other than {UNLABELLED} (unlabelled data)"))
    for bad, what in checks:
        if bad.any():
            raise DataError(f"{data.name}: item {start + int(bad.nonzero()[0])} {what}")


def summarise(data: LatentlabDataset) -> dict:
    """Check every item of one split and report its size, shape, dtype, range and labels."""
    low, high, dtype = float("inf"), float("-inf"), None
    counts = np.zeros(data.num_classes, dtype=np.int64)
    for start in range(0, len(data), CHUNK):
        batch = data.__getitems__(list(range(start, min(start + CHUNK, len(data)))))
        check_chunk(data, batch.x, batch.y, start)
        low, high = min(low, float(batch.x.min())), max(high, float(batch.x.max()))
        dtype = str(batch.x.dtype).removeprefix("torch.")
        if data.num_classes:
            counts += np.bincount(batch.y.numpy(), minlength=data.num_classes)
    labels = (dict(zip(data.class_names, counts.tolist(), strict=True)) if data.num_classes
              else "unlabelled")
    return {"size": len(data), "shape": list(data.shape), "dtype": dtype, "min": low,
            "max": high, "labels": labels, "captions": data.captioned}


def save_scatter(data: LatentlabDataset, path: str | os.PathLike) -> Path:
    """Scatter plot of vectors on their first two principal components, coloured by label."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    batch = data.__getitems__(list(range(min(SCATTER_ITEMS, len(data)))))
    x = batch.x.double().numpy()
    x = x - x.mean(axis=0)  # (B, D)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    pcs = np.zeros((len(x), 2))
    pcs[:, : min(2, len(vt))] = x @ vt[:2].T  # (B, 2); D = 1 leaves the second axis at 0
    figure = Figure(figsize=(5, 5))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    colours = batch.y.numpy() if data.num_classes else None
    points = axes.scatter(pcs[:, 0], pcs[:, 1], c=colours, cmap="tab10", s=4)
    if data.num_classes and data.num_classes <= 20:
        handles, _ = points.legend_elements(num=list(range(data.num_classes)))
        axes.legend(handles, data.class_names, fontsize="small", markerscale=0.8)
    axes.set(title=data.name, xlabel="principal component 1", ylabel="principal component 2")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    return Path(path)


def save_examples(data: LatentlabDataset, path: str | os.PathLike) -> Path:
    """A PNG of up to GRID_ITEMS images (enlarged when small), or a scatter plot of vectors."""
    if not data.is_image:
        return save_scatter(data, path)
    batch = data.__getitems__(list(range(min(GRID_ITEMS, len(data)))))
    return pixels.save_grid(batch.x, path, scale=max(1, 32 // data.shape[1]))


def describe(spec: str, grid: str | os.PathLike | None = None) -> dict:
    """Load both splits of a dataset, check every item, and summarise them.

    Args:
        spec: a dataset spec string (see `latentlab.data.spec`).
        grid: where to save a PNG of training examples (a scatter plot for vectors), if given.

    Returns:
        {"spec", "kind", "splits": {split: summary}, "grid"}, where each summary holds size,
        shape, dtype, min, max, captions and labels: a {class name: count} histogram, or
        "unlabelled". JSON-serialisable.

    Raises:
        DataError: the first unreadable or invalid item, naming it (and its file, for folders).
    """
    datasets = {split: load_dataset(spec, split) for split in SPLITS}
    info = {"spec": spec, "kind": parse_spec(spec).kind,
            "splits": {split: summarise(data) for split, data in datasets.items()},
            "grid": None}
    if grid is not None:
        info["grid"] = str(save_examples(datasets["train"], grid))
    return info


def format_description(info: dict) -> str:
    """`describe`'s result as aligned, human-readable lines."""
    lines = [f"{'dataset':<8} {info['spec']} (kind: {info['kind']})"]
    for split, s in info["splits"].items():
        shape = "(" + ", ".join(map(str, s["shape"])) + (",)" if len(s["shape"]) == 1 else ")")
        lines.append(f"{split:<8} {s['size']} items of {shape} {s['dtype']}, values in "
                     f"[{s['min']:.4g}, {s['max']:.4g}]" + (", captioned" if s["captions"] else ""))
        labels = s["labels"] if isinstance(s["labels"], str) else ", ".join(
            f"{name}: {count}" for name, count in s["labels"].items())
        lines.append(textwrap.fill(f"labels {labels}", width=100, initial_indent=" " * 9,
                                   subsequent_indent=" " * 16))
    if info.get("grid"):
        lines.append(f"{'grid':<8} {info['grid']}")
    return "\n".join(lines)
