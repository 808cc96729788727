"""Convolutional encoder and decoder of image tokenizers, after the LDM / VQGAN autoencoders
(taming-transformers `Encoder` / `Decoder`): residual levels with stride-2 down- and nearest x2
up-sampling, an optional self-attention mid block at the lowest resolution, GroupNorm + SiLU
heads.

Legend: B batch, C image channels, H height, W width, L latent channels, f = 2 ** (levels - 1)
the downsampling factor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from latentlab.nn.attention import Attention
from latentlab.nn.blocks import Downsample, ResBlock, Upsample, group_norm

WIDTH_MULTIPLE = 8
"""Scaled channel counts are multiples of this, so GroupNorm keeps gcd(32, C) >= 8 groups."""


@dataclass
class ConvConfig:
    kind: Literal["conv"] = "conv"
    """A convolutional encoder/decoder (images)."""
    channels: int = 32
    """Base width: level i has channels * ch_mult[i] channels (times `width`)."""
    ch_mult: tuple[int, ...] = (1, 2)
    """Channel multiplier per level; each level after the first halves the resolution, so the
    downsampling factor is f = 2 ** (len(ch_mult) - 1), one of 1, 2, 4, 8."""
    blocks: int = 1
    """Residual blocks per level."""
    attention: bool = False
    """Add a mid block ResBlock -> self-attention -> ResBlock at the lowest resolution (LDM)."""
    heads: int = 1
    """Attention heads of the mid block; must divide its channels."""
    width: float = 1.0
    """Multiplier of every channel count (then rounded to a multiple of 8, at least 8, so
    GroupNorm still divides); below 1 gives the DAE recipe's weak decoder. 1 keeps the channels
    exactly as configured."""
    dropout: float = 0.0
    """Element dropout inside the decoder's residual blocks (the encoder has none)."""
    channel_dropout: float = 0.0
    """Whole-feature-map dropout (Dropout2d) inside the decoder's residual blocks: the DAE
    recipe's other way to weaken the stage-1 decoder."""

    def __post_init__(self):
        for name in ("channels", "blocks", "heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not self.ch_mult or min(self.ch_mult) < 1:
            raise ValueError(f"ch_mult: needs at least one level, each >= 1, got {self.ch_mult}")
        if self.factor not in (1, 2, 4, 8):
            raise ValueError(f"ch_mult: downsampling factor {self.factor} (from "
                             f"{len(self.ch_mult)} levels) must be 1, 2, 4 or 8")
        check_width(self.width)
        for name in ("dropout", "channel_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name}: must be in [0, 1), got {getattr(self, name)}")
        if self.attention and self.level_widths()[-1] % self.heads:
            raise ValueError(f"heads: {self.heads} heads do not divide the "
                             f"{self.level_widths()[-1]} channels of the lowest level")

    @property
    def factor(self) -> int:
        """f: the encoder maps H x W images to H/f x W/f latents."""
        return 2 ** (len(self.ch_mult) - 1)

    def level_widths(self, width: float | None = None) -> list[int]:
        """Channels of each level, scaled by `width` (default: the config's)."""
        width = self.width if width is None else width
        return [scale_width(self.channels * m, width) for m in self.ch_mult]


def check_width(width: float) -> None:
    """Raise ValueError naming width unless it is a finite multiplier > 0."""
    if not (width > 0 and math.isfinite(width)):
        raise ValueError(f"width: must be a finite number > 0, got {width}")


def scale_width(channels: int, width: float) -> int:
    """channels * width rounded to a multiple of WIDTH_MULTIPLE (at least one multiple);
    width 1 returns `channels` unchanged."""
    if width == 1.0:
        return channels
    return max(WIDTH_MULTIPLE, WIDTH_MULTIPLE * round(channels * width / WIDTH_MULTIPLE))


def check_image_size(cfg: ConvConfig, shape: tuple[int, ...]) -> None:
    """Raise ValueError naming ch_mult when images of `shape` (..., H, W) do not fit: each
    downsampling must halve an even size, or the decoder would not give H x W back."""
    h, w = shape[-2:]
    if h % cfg.factor or w % cfg.factor:
        raise ValueError(f"ch_mult: downsampling factor {cfg.factor} does not divide the image "
                         f"size {h}x{w}")


def _res_blocks(cin: int, cout: int, n: int, **drop: float) -> list[nn.Module]:
    """n residual blocks, the first mapping cin -> cout channels."""
    return [ResBlock(cin if i == 0 else cout, cout, **drop) for i in range(n)]


def _mid(channels: int, cfg: ConvConfig, **drop: float) -> nn.Module:
    """LDM's mid block ResBlock -> Attention -> ResBlock, or nothing without attention."""
    if not cfg.attention:
        return nn.Identity()
    return nn.Sequential(ResBlock(channels, channels, **drop), Attention(channels, cfg.heads),
                         ResBlock(channels, channels, **drop))


class ConvEncoder(nn.Module):
    """(B, C, H, W) -> (B, out_channels, H/f, W/f).

    Args:
        in_channels: C, the image channels.
        out_channels: what the bottleneck takes (e.g. 2 * L for a KL bottleneck's mean and
            log-variance).
    """

    def __init__(self, cfg: ConvConfig, in_channels: int, out_channels: int):
        super().__init__()
        self.cfg = cfg
        widths = cfg.level_widths()
        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        levels: list[nn.Module] = []
        for i, w in enumerate(widths):
            levels += _res_blocks(widths[max(i - 1, 0)], w, cfg.blocks)
            if i < len(widths) - 1:
                levels.append(Downsample(w))
        self.down = nn.Sequential(*levels)
        self.mid = _mid(widths[-1], cfg)
        self.norm_out = group_norm(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dim() == 4, f"x must be (B, C, H, W), got {tuple(x.shape)}"
        check_image_size(self.cfg, x.shape)
        h = self.down(self.conv_in(x))  # (B, widths[-1], H/f, W/f)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class ConvDecoder(nn.Module):
    """(B, L, h, w) -> (B, out_channels, f*h, f*w); mirrors ConvEncoder, with the config's
    dropout and channel dropout in every residual block.

    Args:
        latent_channels: L, what the bottleneck hands over.
        out_channels: C, the image channels.
        width: overrides `cfg.width` (the DAE recipe builds its weak stage-1 decoder this way
            while the encoder keeps the config's width).
    """

    def __init__(self, cfg: ConvConfig, latent_channels: int, out_channels: int,
                 width: float | None = None):
        super().__init__()
        if width is not None:
            check_width(width)
        self.cfg = cfg
        widths = cfg.level_widths(width)[::-1]  # lowest resolution first
        drop = dict(dropout=cfg.dropout, channel_dropout=cfg.channel_dropout)
        self.conv_in = nn.Conv2d(latent_channels, widths[0], 3, padding=1)
        self.mid = _mid(widths[0], cfg, **drop)
        levels: list[nn.Module] = []
        for i, w in enumerate(widths):
            levels += _res_blocks(widths[max(i - 1, 0)], w, cfg.blocks, **drop)
            if i < len(widths) - 1:
                levels.append(Upsample(w))
        self.up = nn.Sequential(*levels)
        self.norm_out = group_norm(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], out_channels, 3, padding=1)

    @property
    def last_layer(self) -> nn.Parameter:
        """Weight of the final conv: VQGAN's adaptive GAN weight compares gradients here."""
        return self.conv_out.weight

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert z.dim() == 4, f"z must be (B, L, h, w), got {tuple(z.shape)}"
        h = self.mid(self.conv_in(z))  # (B, widths[0], h, w)
        h = self.up(h)  # (B, widths[-1], f*h, f*w)
        return self.conv_out(F.silu(self.norm_out(h)))
