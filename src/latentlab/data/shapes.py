"""Procedural shapes: one coloured circle, square or triangle on black, with a caption.

Every item is a pure function of (seed, split, index), so the dataset is the same on every
machine and item i does not depend on n. Shapes are drawn with PIL at 4x the resolution and
box-filtered down, which antialiases their edges.

Legend: N items, S image side.
"""

from __future__ import annotations

import numpy as np
from einops import rearrange
from PIL import Image, ImageDraw

from latentlab.data.base import ArrayDataset

SHAPES = ["circle", "square", "triangle"]
PALETTE = {
    "red": (230, 30, 30),
    "green": (30, 200, 60),
    "blue": (40, 80, 240),
    "yellow": (240, 220, 30),
    "magenta": (220, 40, 220),
    "cyan": (30, 220, 230),
    "orange": (250, 140, 20),
    "white": (255, 255, 255),
}
POSITIONS = [
    ["top left", "top", "top right"],
    ["left", "center", "right"],
    ["bottom left", "bottom", "bottom right"],
]
SUPERSAMPLE = 4
RADIUS = (0.15, 0.3)  # half the shape's extent, as a fraction of the image side
_SPLIT_IDS = {"train": 0, "test": 1}


def draw(shape: str, colour: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    """One shape filling the box of half-side r around (cx, cy), as (3, S, S) uint8."""
    s = SUPERSAMPLE
    image = Image.new("RGB", (size * s, size * s))
    pen = ImageDraw.Draw(image)
    box = [s * (cx - r), s * (cy - r), s * (cx + r), s * (cy + r)]
    fill = PALETTE[colour]
    if shape == "circle":
        pen.ellipse(box, fill=fill)
    elif shape == "square":
        pen.rectangle(box, fill=fill)
    else:  # an upright triangle spanning the same box, so the box centre is the shape's centre
        pen.polygon([(s * cx, box[1]), (box[0], box[3]), (box[2], box[3])], fill=fill)
    small = image.resize((size, size), Image.Resampling.BOX)
    return rearrange(np.asarray(small), "h w c -> c h w")


def describe_position(cx: float, cy: float, size: int) -> str:
    """The 3x3 grid cell of a point, in words ("top left", ..., "center", ...)."""
    row, col = (min(int(3 * v / size), 2) for v in (cy, cx))
    return POSITIONS[row][col]


def item(seed: int, split: str, i: int, size: int) -> tuple[np.ndarray, int, str]:
    """Item i of a split: (3, S, S) uint8 image, shape label, caption."""
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], i])
    label = int(rng.integers(len(SHAPES)))
    colour = list(PALETTE)[int(rng.integers(len(PALETTE)))]
    r = size * rng.uniform(*RADIUS)
    cx, cy = rng.uniform(r, size - r, size=2)
    caption = f"a {colour} {SHAPES[label]} at the {describe_position(cx, cy, size)}"
    return draw(SHAPES[label], colour, cx, cy, r, size), label, caption


def shapes(split: str, name: str, size: int, n: int, seed: int) -> ArrayDataset:
    """n training (n // 4 test, at least one) shape images of side `size`, kept as uint8."""
    count = n if split == "train" else max(1, n // 4)
    items = [item(seed, split, i, size) for i in range(count)]
    images = np.stack([image for image, _, _ in items])  # (N, 3, S, S) uint8
    labels = np.array([label for _, label, _ in items], dtype=np.int64)
    return ArrayDataset(images, labels, SHAPES, name, captions=[c for _, _, c in items])
