"""Finite scalar quantisation (FSQ, Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE
Made Simple"): each channel c is bounded to L_c values and rounded, with a straight-through
gradient. The codebook is implicit, the grid of prod(L_c) points; there is no auxiliary loss and
nothing to collapse.

Per channel (the paper's reference code, appendix A.1): half_l = (L - 1) (1 + 1e-3) / 2;
offset = 0.5 for even L, else 0; shift = atanh(offset / half_l);
bound(z) = tanh(z + shift) * half_l - offset, so round(bound(z)) takes exactly L integer values
(-(L-1)/2 .. (L-1)/2 for odd L, -L/2 .. L/2 - 1 for even L, the half-offset making room for an
even count). The code is that integer divided by L // 2, in [-1, 1].
Index: the digits round(bound(z)) + L // 2 in [0, L) in mixed radix, channel 0 the least
significant (the paper's order; `base.digits_to_index`).

Legend: B batch, C channels (= len(levels)), S spatial dims, N tokens, K = prod(levels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from latentlab.tokenizers.bottlenecks.base import (
    Bottleneck,
    BottleneckOutput,
    channels_first,
    channels_last_tokens,
    digits_to_index,
    flatten_tokens,
    full_precision,
    index_to_digits,
    straight_through,
    unflatten_tokens,
)
from latentlab.tokenizers.bottlenecks.usage import CodeUsage

MAX_CODEBOOK = 2**24
"""Largest implicit codebook: usage counts keep one float per code (the paper goes to 2^16)."""
BOUND_EPS = 1e-3
"""Widening of the tanh range so the extreme levels are reachable (FSQ reference code)."""


@dataclass
class FSQConfig:
    kind: Literal["fsq"] = "fsq"
    """Finite scalar quantisation."""
    levels: tuple[int, ...] = (8, 5, 5, 5)
    """Quantisation levels per channel (one entry per latent channel); the codebook size is
    their product. The paper recommends e.g. (8, 5, 5, 5) for 2^10, (8, 8, 8, 5, 5, 5) for 2^16."""

    def __post_init__(self):
        self.levels = tuple(self.levels)
        if not self.levels:
            raise ValueError("levels: needs at least one level")
        if any(level < 2 for level in self.levels):
            raise ValueError(f"levels: every level must be >= 2, got {list(self.levels)}")
        if math.prod(self.levels) > MAX_CODEBOOK:
            raise ValueError(f"levels: codebook of prod(levels) = {math.prod(self.levels)} codes "
                             f"is above the supported 2^24")


class FiniteScalarQuantizer(Bottleneck):
    """(B, C, *S) -> grid codes (B, C, *S) fp32 in [-1, 1] and indices (B, *S) in [0, K).

    Loss: 0 (FSQ needs no auxiliary loss).
    Stats: "perplexity" and "usage" (see `usage.py`).
    """

    discrete = True

    def __init__(self, channels: int, cfg: FSQConfig | None = None):
        super().__init__(channels)
        self.cfg = cfg = cfg or FSQConfig()
        if channels != len(cfg.levels):
            raise ValueError(f"levels: {len(cfg.levels)} levels {list(cfg.levels)} for "
                             f"{channels} channels; FSQ needs one level per channel")
        self.codebook_size = math.prod(cfg.levels)
        levels = torch.tensor(cfg.levels)
        half_l = (levels - 1) * (1 + BOUND_EPS) / 2
        offset = (levels % 2 == 0).float() * 0.5
        # derived from the config, so not saved with the weights; all (C,)
        self.register_buffer("levels", levels, persistent=False)
        self.register_buffer("half_width", (levels // 2).float(), persistent=False)
        self.register_buffer("half_l", half_l, persistent=False)
        self.register_buffer("offset", offset, persistent=False)
        self.register_buffer("shift", torch.atanh(offset / half_l), persistent=False)
        self.usage = CodeUsage(self.codebook_size)

    def bound(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., C) in the open range that rounds to the L_c levels."""
        return torch.tanh(x + self.shift) * self.half_l - self.offset

    def digits_to_codes(self, digits: torch.Tensor) -> torch.Tensor:
        """(..., C) digits in [0, L_c) -> (..., C) fp32 codes in [-1, 1]."""
        return (digits.float() - self.half_width) / self.half_width

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, *S) int64 -> (B, C, *S) fp32 codes, exactly the latent forward gives."""
        return channels_first(self.digits_to_codes(index_to_digits(indices, self.levels)))

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, *S) int64 index of the nearest grid point."""
        with full_precision(codes) as c32:
            scaled = channels_last_tokens(c32) * self.half_width + self.half_width  # (B, *S, C)
            digits = torch.minimum(scaled.round().clamp_min(0), self.levels - 1)
            return digits_to_index(digits, self.levels)

    def forward(self, z: torch.Tensor) -> BottleneckOutput:
        """(B, C, *S) -> latent (B, C, *S) fp32, indices (B, *S) int64."""
        self.check_input(z)
        with full_precision(z) as z32:
            x, packed = flatten_tokens(z32)  # (N, C)
            bounded = self.bound(x)
            digits = bounded.round() + self.half_width  # (N, C), integers in [0, L_c)
            idx = digits_to_index(digits, self.levels)  # (N,)
            # value: the grid code; gradient: that of bounded / half_width (round's is 1)
            latent = straight_through(self.digits_to_codes(digits), bounded / self.half_width)
            stats = self.usage(idx)
        loss = z.new_zeros((), dtype=torch.float32)
        return BottleneckOutput(unflatten_tokens(latent, packed), unflatten_tokens(idx, packed),
                                loss, stats)
