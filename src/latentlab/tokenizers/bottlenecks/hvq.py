"""Hierarchical vector quantisation (VQ-VAE-2, Razavi et al. 2019, sec. 3.1): a top and a bottom
codebook at two resolutions.

The encoder's features (B, F, h, w) are encoded once more, down to the top grid (h/2, w/2),
and quantised by the top codebook: the top level holds the global structure. The top codes are
decoded back to (h, w) and concatenated with the encoder's features, and that is quantised by
the bottom codebook, so the bottom codes carry what the top ones leave out (the bottom level is
conditioned on the top one in encoding). The decoder receives both levels, the bottom codes
beside the top codes brought to (h, w) by nearest upsampling: a latent (B, 2D, h, w), so it
decodes the bottom conditioned on the top.

Token indices are one sequence per item, the top grid first and then the bottom grid, each in
raster order: (B, T), T = h*w/4 + h*w. A prior over this sequence in order (`ar`) models the top
level first and the bottom conditioned on all of it: VQ-VAE-2's two priors, the top one first,
in one stream. Both levels have codebooks of the same size K, so the vocabulary is K and the
position says which codebook an index is of. The indices do not record the grid's sides, so
both grids are square, the bottom side even (`check_grid`).

Each level is a `VectorQuantizer` with this config's VQ settings (EMA codebook, k-means init,
dead-code restarts); the loss is the sum of the two levels' losses.

Legend: B batch, F encoder features (`hidden`), D code channels per level (L / 2), (h, w) the
bottom grid, n = h / 2 the top side, K codebook size, T = 5 n^2 tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from latentlab.nn.blocks import ResBlock
from latentlab.tokenizers.bottlenecks.base import Bottleneck, BottleneckOutput
from latentlab.tokenizers.bottlenecks.vq import VectorQuantizer, VQConfig


@dataclass
class HVQConfig(VQConfig):
    kind: Literal["hvq"] = "hvq"
    """Two-level vector quantisation (VQ-VAE-2); every VQ setting applies to both levels."""
    hidden: int = 64
    """F: channels of the encoder's output, and of the top level's own encoder and decoder."""

    def __post_init__(self):
        super().__post_init__()
        if self.hidden < 8 or self.hidden % 8:
            raise ValueError(f"hidden: must be a multiple of 8 (GroupNorm), got {self.hidden}")


class HierarchicalVQ(Bottleneck):
    """(B, F, h, w) -> latent (B, 2D, h, w) [bottom codes, upsampled top codes], indices (B, T)
    [top grid, bottom grid] (see the module docstring).

    Stats: each level's VQ figures, prefixed "top_" and "bottom_".
    """

    discrete = True

    def __init__(self, channels: int, cfg: HVQConfig | None = None):
        super().__init__(channels)
        if channels % 2:
            raise ValueError(f"latent_channels: hvq splits the latent between its two levels, "
                             f"so it must be even, got {channels}")
        self.cfg = cfg = cfg or HVQConfig()
        self.codebook_size = cfg.codebook_size
        d, f = channels // 2, cfg.hidden
        self.top_encoder = nn.Sequential(nn.Conv2d(f, f, 4, stride=2, padding=1), ResBlock(f, f),
                                         nn.Conv2d(f, d, 1))
        self.top = VectorQuantizer(d, cfg)
        self.top_decoder = nn.Sequential(nn.Conv2d(d, f, 3, padding=1), ResBlock(f, f),
                                         nn.ConvTranspose2d(f, f, 4, stride=2, padding=1))
        self.bottom_in = nn.Conv2d(2 * f, d, 1)
        self.bottom = VectorQuantizer(d, cfg)

    @property
    def in_channels(self) -> int:
        return self.cfg.hidden

    def check_grid(self, spatial: tuple[int, ...]) -> None:
        if len(spatial) != 2 or spatial[0] != spatial[1] or spatial[0] % 2:
            raise ValueError(f"bottleneck.kind: hvq needs a square latent grid of even side "
                             f"(its top level halves it), got {'x'.join(map(str, spatial))}")

    def index_shape(self, spatial: tuple[int, ...]) -> tuple[int, ...]:
        h, w = spatial
        return (h * w // 4 + h * w,)

    def forward(self, z: torch.Tensor) -> BottleneckOutput:
        self.check_input(z)
        self.check_grid(tuple(z.shape[2:]))
        top = self.top(self.top_encoder(z))
        bottom = self.bottom(self.bottom_in(torch.cat([z, self.top_decoder(top.latent)], 1)))
        indices = torch.cat([top.indices.flatten(1), bottom.indices.flatten(1)], 1)
        stats = ({f"top_{k}": v for k, v in top.stats.items()}
                 | {f"bottom_{k}": v for k, v in bottom.stats.items()})
        return BottleneckOutput(join(bottom.latent, top.latent), indices,
                                top.loss + bottom.loss, stats)

    def split(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) -> the top (B, n, n) and bottom (B, 2n, 2n) grids of indices."""
        assert indices.ndim == 2, f"hvq indices are (B, T), got {tuple(indices.shape)}"
        n = math.isqrt(indices.shape[1] // 5)
        if 5 * n * n != indices.shape[1] or n == 0:
            raise ValueError(f"hvq indices: {indices.shape[1]} tokens per item are not a top "
                             "grid n x n and a bottom grid 2n x 2n")
        b = len(indices)
        return indices[:, :n * n].view(b, n, n), indices[:, n * n:].view(b, 2 * n, 2 * n)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, T) int64 -> (B, 2D, h, w) fp32, exactly the latent forward gives."""
        top, bottom = self.split(indices)
        return join(self.bottom.indices_to_codes(bottom), self.top.indices_to_codes(top))

    def codebook_vectors(self) -> torch.Tensor:
        """(2K, D): the top level's codes, then the bottom level's."""
        return torch.cat([self.top.codebook_vectors(), self.bottom.codebook_vectors()])

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, 2D, h, w) -> (B, T) int64: each level's nearest codes."""
        d = self.channels // 2
        top = self.top.codes_to_indices(codes[:, d:, ::2, ::2])
        bottom = self.bottom.codes_to_indices(codes[:, :d])
        return torch.cat([top.flatten(1), bottom.flatten(1)], 1)


def join(bottom: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """Bottom codes (B, D, h, w) and top codes (B, D, h/2, w/2) -> (B, 2D, h, w), the top codes
    repeated over each 2x2 block (nearest upsampling, exact)."""
    return torch.cat([bottom, top.repeat_interleave(2, -2).repeat_interleave(2, -1)], 1)
