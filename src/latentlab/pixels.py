"""The one pixel convention of latentlab, fixed here and nowhere else.

Images are float32 tensors of shape (B, C, H, W) with values in [-1, 1]; labels are int64.
On disk and in public files (`samples.npz`) images are uint8 (N, H, W, C) in [0, 255].

Legend: B batch, C channels, H height, W width, N images.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image

from latentlab.io import atomic_path

LOW, HIGH = -1.0, 1.0
DATA_RANGE = HIGH - LOW  # used by PSNR / SSIM


def from_uint8(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] of any shape -> float32 [-1, 1] of the same shape."""
    x = torch.as_tensor(x)
    assert x.dtype == torch.uint8, f"expected uint8 pixels, got {x.dtype}"
    return x.to(torch.float32) * (DATA_RANGE / 255.0) + LOW


def from_unit(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """float in [0, 1] of any shape -> float32 [-1, 1] of the same shape."""
    return torch.as_tensor(x, dtype=torch.float32) * DATA_RANGE + LOW


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] of any shape -> uint8 [0, 255], clamped and rounded."""
    x = (x.detach().float() - LOW) * (255.0 / DATA_RANGE)
    return x.round().clamp(0, 255).to(torch.uint8)


def to_hwc_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) float [-1, 1] -> (B, H, W, C) uint8 numpy, the public on-disk layout."""
    assert x.ndim == 4, f"images must be (B, C, H, W), got {tuple(x.shape)}"
    return rearrange(to_uint8(x), "b c h w -> b h w c").cpu().numpy()


def make_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile (B, C, H, W) images in [-1, 1] into one (H', W', C) uint8 array with a black border."""
    assert images.ndim == 4, f"images must be (B, C, H, W), got {tuple(images.shape)}"
    b, c, h, w = images.shape
    nrow = nrow or max(1, int(np.ceil(np.sqrt(b))))
    ncol = int(np.ceil(b / nrow))
    tiles = to_hwc_uint8(images)
    grid = np.zeros((ncol * (h + pad) + pad, nrow * (w + pad) + pad, c), dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, q = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        grid[y : y + h, x : x + w] = tile
    return grid


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int | None = None,
              scale: int = 1) -> Path:
    """Save (B, C, H, W) images in [-1, 1] as one PNG grid, atomically; `scale` enlarges it."""
    grid = make_grid(images, nrow)
    image = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path
