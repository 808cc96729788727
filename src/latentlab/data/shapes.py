"""Procedural shapes: one coloured circle, square or triangle on black, with a caption and
the structured attributes the caption was written from (`Scenes`), so prompt adherence can be
scored exactly.

Every item is a pure function of (seed, split, index), so the dataset is the same on every
machine and item i does not depend on n. Shapes are drawn with PIL at 4x the resolution and
box-filtered down, which antialiases their edges.

Legend: N items, S image side, K objects per item at most, A attributes per object.
"""

from __future__ import annotations

import numpy as np
from einops import rearrange
from PIL import Image, ImageDraw

from latentlab.data.base import ArrayDataset, Scenes

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
SIZES = ["small", "large"]
CELLS = [name for row in POSITIONS for name in row]  # row-major 3x3 grid cells
ATTRIBUTES = {"shape": SHAPES, "colour": list(PALETTE), "size": SIZES, "position": CELLS}
MAX_OBJECTS = 1
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


def item(seed: int, split: str, i: int, size: int
         ) -> tuple[np.ndarray, int, str, np.ndarray, np.ndarray]:
    """Item i of a split: (3, S, S) uint8 image, shape label, caption, its object's attributes
    (1, A) int64 in `ATTRIBUTES` order and which of them the caption states (1, A) bool."""
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], i])
    label = int(rng.integers(len(SHAPES)))
    colour = int(rng.integers(len(PALETTE)))
    r = size * rng.uniform(*RADIUS)
    cx, cy = rng.uniform(r, size - r, size=2)
    position = describe_position(cx, cy, size)
    caption = f"a {ATTRIBUTES['colour'][colour]} {SHAPES[label]} at the {position}"
    large = int(r >= size * sum(RADIUS) / 2)  # not in the caption: recorded for the judge
    objects = np.array([[label, colour, large, CELLS.index(position)]], dtype=np.int64)
    stated = np.array([[True, True, False, True]])
    image = draw(SHAPES[label], ATTRIBUTES["colour"][colour], cx, cy, r, size)
    return image, label, caption, objects, stated


def shapes(split: str, name: str, size: int, n: int, seed: int) -> ArrayDataset:
    """n training (n // 4 test, at least one) shape images of side `size`, kept as uint8."""
    count = n if split == "train" else max(1, n // 4)
    items = [item(seed, split, i, size) for i in range(count)]
    images = np.stack([it[0] for it in items])  # (N, 3, S, S) uint8
    labels = np.array([it[1] for it in items], dtype=np.int64)
    scenes = Scenes(np.stack([it[3] for it in items]), np.stack([it[4] for it in items]),
                    np.full((count, MAX_OBJECTS), -1, dtype=np.int64), ATTRIBUTES)
    return ArrayDataset(images, labels, SHAPES, name, captions=[it[2] for it in items],
                        scenes=scenes)
