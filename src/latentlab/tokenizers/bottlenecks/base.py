"""What every bottleneck is: the piece between encoder and decoder.

A bottleneck takes the encoder's output z of shape (B, C_in, *S) — S the spatial dims, (h, w)
for images and () for vectors — and returns one typed `BottleneckOutput`. Each position of S is
one token: discrete bottlenecks give one index per position, `indices` of shape (B, *S).

Legend: B batch, C channels, S spatial dims, N tokens (B * prod(S)), K codebook size.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from einops import pack, unpack
from torch import nn


@dataclass(frozen=True)
class BottleneckOutput:
    """The result of a bottleneck.

    Attributes:
        latent: (B, C, *S) what the decoder consumes (quantised codes, a posterior sample, ...).
        indices: (B, *S) int64 code indices for discrete bottlenecks, else None.
        loss: scalar auxiliary loss, already weighted (KL, commitment, codebook, entropy).
        stats: detached scalar figures for logging, e.g. {"kl": ..., "perplexity": ...}.
    """

    latent: torch.Tensor
    indices: torch.Tensor | None
    loss: torch.Tensor
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


class Bottleneck(nn.Module):
    """Base class. `in_channels` is what the encoder must produce, `channels` what the decoder
    receives. Discrete subclasses set `discrete = True`, `codebook_size`, and map exactly between
    codes and indices."""

    discrete: bool = False
    codebook_size: int | None = None

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels

    @property
    def in_channels(self) -> int:
        return self.channels

    def forward(self, z: torch.Tensor) -> BottleneckOutput:
        raise NotImplementedError

    def set_step(self, step: int) -> None:
        """Told the training step before each training step's forward (a bottleneck annealed
        over training keeps it); nothing by default."""

    def check_grid(self, spatial: tuple[int, ...]) -> None:
        """Raise ValueError naming the field when latents of spatial dims `spatial` do not fit
        this bottleneck; any fit by default."""

    def index_shape(self, spatial: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of one item's indices for latents of spatial dims S: S by default (one
        token per position)."""
        return spatial

    def check_input(self, z: torch.Tensor) -> None:
        """Assert that z is (B, in_channels, *S), where the encoder's output enters."""
        assert z.ndim >= 2 and z.shape[1] == self.in_channels, (
            f"{type(self).__name__} takes (B, {self.in_channels}, *S), got {tuple(z.shape)}")

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, *S) int64 -> (B, C, *S) the latent the decoder receives for those codes."""
        raise NotImplementedError(f"{type(self).__name__} is not discrete")

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) codes (as in `latent`) -> (B, *S) int64 indices."""
        raise NotImplementedError(f"{type(self).__name__} is not discrete")

    def codebook_vectors(self) -> torch.Tensor:
        """(K, C) every code vector a discrete bottleneck holds (for plots of its spread)."""
        codes = torch.arange(self.codebook_size, device=self._device())
        return self.indices_to_codes(codes)

    def _device(self) -> torch.device:
        tensor = next(iter(self.buffers()), None)
        tensor = tensor if tensor is not None else next(iter(self.parameters()), None)
        return tensor.device if tensor is not None else torch.device("cpu")


@contextlib.contextmanager
def full_precision(z: torch.Tensor):
    """Quantisation maths in fp32 even under bf16 autocast (rounding to codes must be exact)."""
    with torch.autocast(z.device.type, enabled=False):
        yield z.float()


def channels_last_tokens(z: torch.Tensor) -> torch.Tensor:
    """(B, C, *S) -> (B, *S, C): one C-vector per token, for per-token maths."""
    return z.movedim(1, -1)


def channels_first(tokens: torch.Tensor) -> torch.Tensor:
    """(B, *S, C) -> (B, C, *S), the inverse of `channels_last_tokens`."""
    return tokens.movedim(-1, 1)


def flatten_tokens(z: torch.Tensor) -> tuple[torch.Tensor, list[torch.Size]]:
    """(B, C, *S) -> ((N, C) one row per token, the packed shape for `unflatten_tokens`).

    Works for any memory format (channels_last images included): einops copies when it must.
    """
    tokens, packed = pack([channels_last_tokens(z)], "* c")
    return tokens, packed


def unflatten_tokens(tokens: torch.Tensor, packed: list[torch.Size]) -> torch.Tensor:
    """(N, ...) per-token values -> (B, ..., *S): per-token vectors go back channels first,
    per-token scalars (indices) come back as (B, *S)."""
    if tokens.ndim == 1:
        [out] = unpack(tokens, packed, "*")
        return out
    [out] = unpack(tokens, packed, "* c")
    return channels_first(out)


def straight_through(value: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Forward `value` exactly, backward the identity to z (the straight-through estimator,
    Bengio et al. 2013; VQ-VAE, van den Oord et al. 2017, sec. 3.1).

    Written value.detach() + (z - z.detach()) rather than z + (value - z).detach(): z - z.detach()
    is exactly 0, so the output equals `value` bitwise and indices_to_codes(indices) == latent
    holds exactly (the usual form is off by a rounding error).
    """
    return value.detach() + (z - z.detach())


def digits_to_index(digits: torch.Tensor, radices: torch.Tensor) -> torch.Tensor:
    """(..., C) integer digits with digits[..., c] in [0, radices[c]) -> (...) int64 index.

    Mixed radix with channel 0 the least significant digit: index = sum_c digits_c * prod_{j<c}
    radices_j (the FSQ reference code's order; LFQ is the case radices = 2).
    """
    basis = torch.cumprod(torch.cat([radices.new_ones(1), radices[:-1]]), 0)  # (C,)
    return (digits.long() * basis).sum(-1)


def index_to_digits(index: torch.Tensor, radices: torch.Tensor) -> torch.Tensor:
    """(...) int64 index -> (..., C) int64 digits, the inverse of `digits_to_index`."""
    basis = torch.cumprod(torch.cat([radices.new_ones(1), radices[:-1]]), 0)  # (C,)
    return torch.div(index.unsqueeze(-1), basis, rounding_mode="floor") % radices
