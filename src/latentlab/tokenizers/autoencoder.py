"""A plain convolutional autoencoder: x -> latent -> x.

Legend: B batch, C image channels, H height, W width, L latent channels, f downsampling factor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from latentlab.nn.blocks import Downsample, ResBlock, Upsample, group_norm


@dataclass
class AutoencoderConfig:
    in_channels: int = 1
    """Image channels (set from the dataset when a run starts)."""
    channels: int = 32
    """Width of the first level; level i has channels * ch_mult[i]."""
    ch_mult: tuple[int, ...] = (1, 2)
    """Channel multiplier per level; each level after the first halves the resolution, so the
    downsampling factor is 2 ** (len(ch_mult) - 1)."""
    blocks: int = 1
    """Residual blocks per level."""
    latent_channels: int = 4
    """Channels of the latent."""
    dropout: float = 0.0
    """Dropout inside the decoder's residual blocks."""

    def __post_init__(self):
        if self.in_channels < 1:
            raise ValueError(f"in_channels: must be >= 1, got {self.in_channels}")
        for name in ("channels", "latent_channels", "blocks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not self.ch_mult or min(self.ch_mult) < 1:
            raise ValueError(f"ch_mult: needs at least one level, each >= 1, got {self.ch_mult}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout: must be in [0, 1), got {self.dropout}")

    @property
    def factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


class Encoder(nn.Module):
    """(B, C, H, W) -> (B, L, H/f, W/f)."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        widths = [cfg.channels * m for m in cfg.ch_mult]
        layers: list[nn.Module] = [nn.Conv2d(cfg.in_channels, widths[0], 3, padding=1)]
        for i, width in enumerate(widths):
            cin = widths[max(i - 1, 0)]
            layers += [ResBlock(cin if b == 0 else width, width) for b in range(cfg.blocks)]
            if i < len(widths) - 1:
                layers.append(Downsample(width))
        layers += [group_norm(widths[-1]), nn.SiLU(),
                   nn.Conv2d(widths[-1], cfg.latent_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """(B, L, H/f, W/f) -> (B, C, H, W); mirrors the encoder."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        widths = [cfg.channels * m for m in cfg.ch_mult][::-1]
        layers: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, widths[0], 3, padding=1)]
        for i, width in enumerate(widths):
            cin = widths[max(i - 1, 0)]
            layers += [ResBlock(cin if b == 0 else width, width, dropout=cfg.dropout)
                       for b in range(cfg.blocks)]
            if i < len(widths) - 1:
                layers.append(Upsample(width))
        layers += [group_norm(widths[-1]), nn.SiLU(),
                   nn.Conv2d(widths[-1], cfg.in_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Autoencoder(nn.Module):
    """Encoder and decoder with nothing between them (the bottlenecks come later)."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder, self.decoder = Encoder(cfg), Decoder(cfg)

    def check_input(self, shape: tuple[int, ...]) -> None:
        """Raise ValueError naming the field when images of `shape` (C, H, W) do not fit."""
        c, h, w = shape
        if c != self.cfg.in_channels:
            raise ValueError(f"in_channels: model takes {self.cfg.in_channels}, images have {c}")
        f = self.cfg.factor
        if h % f or w % f:
            raise ValueError(f"ch_mult: downsampling factor {f} does not divide the image "
                             f"size {h}x{w}")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))
