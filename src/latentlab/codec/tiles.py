"""The resolution policy of the codec: images of any size are coded as tiles.

The prior models token grids of one shape, so the codec codes tiles of the tokenizer's training
resolution (th, tw). An image of H x W is padded at the bottom and right by repeating its edge
pixels up to rows * th x cols * tw (rows = ceil(H / th), cols = ceil(W / tw)), cut into tiles in
raster order, and cropped back to H x W after decoding. The file records H, W and the tile grid
of every image: nothing is resized, nothing is silently cropped. Edge replication (rather than
zeros) keeps the padded area as cheap to code as its neighbourhood.

Legend: H W image height and width, C channels, T tiles, th tw tile height and width.
"""

from __future__ import annotations

import numpy as np
from einops import rearrange

from latentlab.codec.container import tile_grid


def to_tiles(image: np.ndarray, tile: tuple[int, int]) -> np.ndarray:
    """(H, W, C) uint8 -> (rows * cols, C, th, tw) uint8, edge-padded, raster order."""
    assert image.ndim == 3, f"image must be (H, W, C), got {image.shape}"
    (h, w, _), (th, tw) = image.shape, tile
    rows, cols = tile_grid(h, w, tile)
    padded = np.pad(image, ((0, rows * th - h), (0, cols * tw - w), (0, 0)), mode="edge")
    return rearrange(padded, "(r th) (c tw) ch -> (r c) ch th tw", th=th, tw=tw)


def from_tiles(tiles: np.ndarray, height: int, width: int) -> np.ndarray:
    """The inverse of `to_tiles`: (rows * cols, C, th, tw) -> (H, W, C), cropped."""
    assert tiles.ndim == 4, f"tiles must be (T, C, th, tw), got {tiles.shape}"
    rows, _ = tile_grid(height, width, tiles.shape[2:])
    image = rearrange(tiles, "(r c) ch th tw -> (r th) (c tw) ch", r=rows)
    return np.ascontiguousarray(image[:height, :width])
