"""Procedural shapes on black, with a caption and the structured attributes the caption was
written from (`Scenes`), so prompt adherence can be scored exactly.

Two worlds (options in `latentlab.data.spec`):

- single-object (``objects=1``, the default): one circle, square or triangle of any size
  anywhere, "a red circle at the top left" (8 colours, 3 shapes, 9 positions);
- compositional (``objects=K``, K = 2 or 3): 1..K objects (a uniform count) in distinct cells
  of the 3x3 grid, each small or large and inside its cell, so they never overlap; the caption
  states every object's size, colour and shape, and either its cell or a relation ("left of",
  "right of", "above", "below") to the next object, true in the image (see `shapes_captions`).

Both can use up to six shapes (``shapes=6``), varied wordings (``phrasings=on``) and hold chosen
colour-shape pairs out of the train split (``holdout=...``): a train item that would contain one
is redrawn from the next sub-seed, so every item is still a pure function of (seed, split, index)
and item i does not depend on n. Shapes are drawn with PIL at 4x the resolution and
box-filtered down, which antialiases their edges.

Legend: N items, S image side, K objects per item at most, A attributes per object.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from einops import rearrange
from PIL import Image, ImageDraw

from latentlab.data.base import ArrayDataset, Scenes
from latentlab.data.shapes_captions import RELATIONS, caption
from latentlab.errors import DataError

SHAPES = ["circle", "square", "triangle"]  # the single-object world's shapes (and class names)
SHAPES_ALL = [*SHAPES, "star", "diamond", "cross"]  # ``shapes=M`` takes the first M
MIN_SHAPES, MAX_SHAPES = len(SHAPES), len(SHAPES_ALL)
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
MAX_OBJECTS = 1  # of the single-object world
OBJECTS = 3  # the most objects the compositional world puts in one image
SUPERSAMPLE = 4
RADIUS = (0.15, 0.3)  # half the shape's extent, as a fraction of the image side
CELL_RADIUS = {0: (0.4, 0.55), 1: (0.75, 0.9)}  # small, large: fraction of half a cell's side
REDRAWS = 1000  # sub-seeds a held-out train item may try
_SPLIT_IDS = {"train": 0, "test": 1}


@dataclass(frozen=True)
class World:
    """What a `shapes` dataset draws from.

    Attributes:
        objects: 1 for the single-object world, else the most objects of the compositional one.
        shapes: the shape names in use.
        phrasings: vary the wording of each caption.
        holdout: (colour, shape) pairs no train item contains.
    """

    objects: int = 1
    shapes: tuple[str, ...] = tuple(SHAPES)
    phrasings: bool = False
    holdout: frozenset[tuple[str, str]] = frozenset()

    @cached_property  # asked once per item: build it once
    def names(self) -> dict[str, list[str]]:
        names = {**ATTRIBUTES, "shape": list(self.shapes)}
        return names if self.objects == 1 else {**names, "relation": RELATIONS}

    def held_out(self, objects: np.ndarray) -> bool:
        """Whether a (K, A) object array holds a held-out colour-shape pair."""
        if not self.holdout:
            return False
        colours = ATTRIBUTES["colour"]
        return any((colours[c], self.shapes[s]) in self.holdout for s, c, *_ in objects if s >= 0)


@dataclass(frozen=True)
class Item:
    """One `shapes` item: (3, S, S) uint8 image, its shape label (the first object's), caption,
    (K, A) attributes and stated flags, (K,) relations, and whether it holds a held-out pair."""

    image: np.ndarray
    label: int
    caption: str
    objects: np.ndarray
    stated: np.ndarray
    relations: np.ndarray
    held_out: bool


def _draw_shape(pen: ImageDraw.ImageDraw, shape: str, colour: str, cx: float, cy: float,
                r: float) -> None:
    """One shape filling (as far as its outline allows) the box of half-side r around (cx, cy),
    in supersampled canvas coordinates."""
    s = SUPERSAMPLE
    cx, cy, r = s * cx, s * cy, s * r
    box = [cx - r, cy - r, cx + r, cy + r]
    fill = PALETTE[colour]
    if shape == "circle":
        pen.ellipse(box, fill=fill)
    elif shape == "square":
        pen.rectangle(box, fill=fill)
    elif shape == "triangle":  # upright, spanning the box, so the box centre is its centre
        pen.polygon([(cx, box[1]), (box[0], box[3]), (box[2], box[3])], fill=fill)
    elif shape == "diamond":
        pen.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    elif shape == "cross":  # a plus sign with arms a third of the box wide
        w = r / 3
        pen.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
        pen.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
    else:  # a five-pointed star, points on the circle of radius r, inner radius 0.45 r
        angles = np.pi * (np.arange(10) / 5 - 0.5)
        radii = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        pen.polygon(list(zip(cx + radii * np.cos(angles), cy + radii * np.sin(angles),
                             strict=True)), fill=fill)


def draw_all(things: list[tuple[str, str, float, float, float]], size: int) -> np.ndarray:
    """(shape, colour, cx, cy, r) per object, drawn in order, as (3, S, S) uint8."""
    s = SUPERSAMPLE
    image = Image.new("RGB", (size * s, size * s))
    pen = ImageDraw.Draw(image)
    for thing in things:
        _draw_shape(pen, *thing)
    small = image.resize((size, size), Image.Resampling.BOX)
    return rearrange(np.asarray(small), "h w c -> c h w")


def draw(shape: str, colour: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    """One shape filling the box of half-side r around (cx, cy), as (3, S, S) uint8."""
    return draw_all([(shape, colour, cx, cy, r)], size)


def describe_position(cx: float, cy: float, size: int) -> str:
    """The 3x3 grid cell of a point, in words ("top left", ..., "center", ...)."""
    row, col = (min(int(3 * v / size), 2) for v in (cy, cx))
    return POSITIONS[row][col]


def _single(rng: np.random.Generator, size: int, world: World):
    """The single-object world's draw: attributes, stated flags, relations and geometry."""
    label = int(rng.integers(len(world.shapes)))
    colour = int(rng.integers(len(PALETTE)))
    r = size * rng.uniform(*RADIUS)
    cx, cy = rng.uniform(r, size - r, size=2)
    large = int(r >= size * sum(RADIUS) / 2)  # not in the caption: recorded for the judge
    cell = CELLS.index(describe_position(cx, cy, size))
    objects = np.array([[label, colour, large, cell]], dtype=np.int64)
    stated = np.array([[True, True, False, True]])
    return objects, stated, np.full(1, -1, dtype=np.int64), [(cx, cy, r)]


def _true_relations(a: int, b: int) -> list[int]:
    """Indices into RELATIONS of what cell a is relative to cell b (distinct cells)."""
    (ra, ca), (rb, cb) = divmod(a, 3), divmod(b, 3)
    return [k for k, holds in enumerate((ca < cb, ca > cb, ra < rb, ra > rb)) if holds]


def _grid(rng: np.random.Generator, size: int, world: World):
    """The compositional world's draw: 1..K objects in distinct cells, each inside its cell."""
    n, k = int(rng.integers(1, world.objects + 1)), world.objects
    cells = rng.choice(len(CELLS), size=n, replace=False)
    shape = rng.integers(len(world.shapes), size=n)
    colour = rng.integers(len(PALETTE), size=n)
    large = rng.integers(2, size=n)
    half = size / 6  # half a cell's side
    r = half * np.array([rng.uniform(*CELL_RADIUS[int(big)]) for big in large])
    jitter = rng.uniform(-1, 1, size=(n, 2)) * (half - r)[:, None]  # keeps it in its cell
    row, col = np.divmod(cells, 3)
    cx, cy = (2 * col + 1) * half + jitter[:, 0], (2 * row + 1) * half + jitter[:, 1]
    relations = np.full(k, -1, dtype=np.int64)
    for j in range(1, n):
        if rng.random() < 0.5:
            true = _true_relations(int(cells[j - 1]), int(cells[j]))
            relations[j] = true[int(rng.integers(len(true)))]
    related = (relations[:n] >= 0) | (np.r_[relations[1:n], -1] >= 0)
    say_cell = (rng.random(n) < 0.5) & ~related  # a cell beside a relation would read ambiguously
    objects = np.full((k, 4), -1, dtype=np.int64)
    objects[:n] = np.stack([shape, colour, large, cells], axis=1)
    stated = np.zeros((k, 4), dtype=bool)
    stated[:n, :3] = True
    stated[:n, 3] = say_cell
    return objects, stated, relations, list(zip(cx, cy, r, strict=True))


def item(seed: int, split: str, i: int, size: int, world: World = World()) -> Item:
    """Item i of a split (see `Item`). A train item holding a held-out pair is drawn again from
    sub-seed 1, 2, ... of the same index; the first draw (sub-seed 0) is the one without."""
    for attempt in range(REDRAWS):
        rng = np.random.default_rng([seed, _SPLIT_IDS[split], i, *([attempt] if attempt else [])])
        objects, stated, relations, where = (_single if world.objects == 1 else _grid)(
            rng, size, world)
        held_out = world.held_out(objects)
        if split != "train" or not held_out:
            break
    else:
        raise DataError(f"shapes: holdout leaves no drawable training image for item {i}")
    # drawn last, so the content of an item does not depend on phrasings
    wording = np.random.default_rng(rng.integers(2**63)) if world.phrasings else None
    names = world.names
    text = caption(objects, stated, relations, names, wording)
    things = [(world.shapes[o[0]], names["colour"][o[1]], *xyr)
              for o, xyr in zip(objects, where, strict=False)]
    return Item(draw_all(things, size), int(objects[0, 0]), text, objects, stated, relations,
                held_out)


def _world(objects: int, count: int, phrasings: bool,
           holdout: frozenset[tuple[str, str]]) -> World:
    world = World(objects, tuple(SHAPES_ALL[:count]), phrasings, holdout)
    for shape in sorted({shape for _, shape in holdout}):
        if shape not in world.shapes:
            raise DataError(f"shapes: holdout names {shape!r}, not among shapes={count} "
                            f"({', '.join(world.shapes)})")
    if len(holdout) == len(PALETTE) * count:
        raise DataError("shapes: holdout holds out every colour-shape pair")
    return world


def shapes(split: str, name: str, size: int, n: int, seed: int, objects: int = 1,
           shapes: int = MIN_SHAPES, phrasings: bool = False,
           holdout: frozenset[tuple[str, str]] = frozenset()) -> ArrayDataset:
    """n training (n // 4 test, at least one) shape images of side `size`, kept as uint8.

    `objects`, `shapes`, `phrasings` and `holdout` choose the world (see `World`)."""
    world = _world(objects, shapes, phrasings, holdout)
    count = n if split == "train" else max(1, n // 4)
    items = [item(seed, split, i, size, world) for i in range(count)]
    images = np.stack([it.image for it in items])  # (N, 3, S, S) uint8
    labels = np.array([it.label for it in items], dtype=np.int64)
    scenes = Scenes(np.stack([it.objects for it in items]), np.stack([it.stated for it in items]),
                    np.stack([it.relations for it in items]), world.names,
                    held_out=np.array([it.held_out for it in items]))
    return ArrayDataset(images, labels, list(world.shapes), name,
                        captions=[it.caption for it in items], scenes=scenes)
