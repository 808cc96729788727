"""Convolutional building blocks: residual blocks, down- and up-sampling, a GroupNorm.

Legend: B batch, C channels, H height, W width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups that divide `channels` (32 is the usual choice)."""
    return GroupNorm(math.gcd(32, channels), channels, eps=1e-6)


class _Relayout(torch.autograd.Function):
    """`x.contiguous(memory_format=to)` whose gradient is laid out back in `back`.

    Autograd's own copy hands the gradient on in whatever layout it arrives, so NCHW gradients
    would meet channels_last ones where a tensor branches, and mixed-layout adds are slow. The
    backward is this function again, so double backward (gradient penalties) still works.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, to: torch.memory_format, back: torch.memory_format):
        ctx.to, ctx.back = to, back
        return x.contiguous(memory_format=to)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _Relayout.apply(grad, ctx.back, ctx.to), None, None


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm that normalises bf16 channels_last CPU input in NCHW: (B, C, H, W) -> same.

    On the CPU (torch 2.13), GroupNorm of bf16 channels_last input is up to ~20x slower than of
    NCHW input, backward most of all: under the engine's bf16 autocast + channels_last it took
    over half the digits autoencoder's step and a third of a 32x32 one's. Copying to NCHW and
    back costs far less: those steps run ~2.2x and ~1.2x faster (benchmarks/groupnorm_layout.py).
    Any other input takes nn.GroupNorm's own path, bit for bit: fp32 channels_last kernels are
    not slow enough to repay the copies, and GPUs were not measured. Same parameters and
    state_dict as nn.GroupNorm.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels_last = (x.dim() == 4 and not x.is_contiguous()
                         and x.is_contiguous(memory_format=torch.channels_last))
        if not (channels_last and x.dtype == torch.bfloat16 and x.device.type == "cpu"):
            return super().forward(x)
        nchw, nhwc = torch.contiguous_format, torch.channels_last
        y = super().forward(_Relayout.apply(x, nchw, nhwc))
        return _Relayout.apply(y, nhwc, nchw)


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv3x3, twice, plus a (1x1-projected) skip: (B, Cin, H, W) ->
    (B, Cout, H, W).

    Args:
        dropout: element dropout before the second convolution.
        channel_dropout: drops whole feature maps there instead (Dropout2d); the DAE recipe
            weakens a decoder with it.
    """

    def __init__(self, cin: int, cout: int, dropout: float = 0.0, channel_dropout: float = 0.0):
        super().__init__()
        self.norm1, self.conv1 = group_norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = group_norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.drop = nn.Sequential(nn.Dropout(dropout), nn.Dropout2d(channel_dropout))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Downsample(nn.Module):
    """Stride-2 conv3x3: (B, C, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest x2 then conv3x3 (no checkerboard artefacts of transposed convs):
    (B, C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
