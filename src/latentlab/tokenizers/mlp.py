"""Fully connected encoder and decoder for vector data, e.g. the DAE paper's Gaussian-mixture toy
(`004_*.txt`, section 6: "both the encoder and the decoder are 3-layer fully connected networks
with different hidden dimensions"; its table compares hidden dims (64, 128) and (128, 64),
i.e. encoder 64 / decoder 128 and the reverse).

Legend: B batch, D data features, L latent features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from latentlab.tokenizers.conv import check_width

ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU}


@dataclass
class MLPConfig:
    kind: Literal["mlp"] = "mlp"
    """A fully connected encoder/decoder (vectors)."""
    encoder_hidden: tuple[int, ...] = (128, 128)
    """Widths of the encoder's hidden layers, one entry per hidden layer: (64, 64) is a 3-layer
    network D -> 64 -> 64 -> out. An empty list is a single linear map."""
    decoder_hidden: tuple[int, ...] = (128, 128)
    """Widths of the decoder's hidden layers, as for encoder_hidden."""
    activation: Literal["silu", "relu", "gelu"] = "silu"
    """Nonlinearity after each hidden layer."""
    dropout: float = 0.0
    """Dropout after each hidden activation of the decoder only (a weak DAE stage-1 decoder)."""

    def __post_init__(self):
        for name in ("encoder_hidden", "decoder_hidden"):
            if any(h < 1 for h in getattr(self, name)):
                raise ValueError(f"{name}: widths must be >= 1, got {getattr(self, name)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation: must be one of {', '.join(ACTIVATIONS)}, "
                             f"got {self.activation!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout: must be in [0, 1), got {self.dropout}")

    @classmethod
    def uniform(cls, encoder: int, decoder: int, layers: int = 3, **kwargs) -> MLPConfig:
        """Networks of `layers` linear layers with the same hidden width throughout:
        `MLPConfig.uniform(64, 128)` is the DAE table's "hidden dim (64, 128)"."""
        if layers < 1:
            raise ValueError(f"layers: must be >= 1, got {layers}")
        return cls(encoder_hidden=(encoder,) * (layers - 1),
                   decoder_hidden=(decoder,) * (layers - 1), **kwargs)


def _mlp(widths: list[int], activation: str, dropout: float | None = None) -> nn.Sequential:
    """Linear layers through `widths` with the activation (then dropout, unless None) between
    them and nothing after the last."""
    layers: list[nn.Module] = []
    for i, (cin, cout) in enumerate(zip(widths, widths[1:], strict=False)):
        layers.append(nn.Linear(cin, cout))
        if i < len(widths) - 2:
            layers.append(ACTIVATIONS[activation]())
            if dropout is not None:  # kept at p = 0 too: layer indices do not depend on it
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """(B, D) -> (B, out_features); out_features is what the bottleneck takes (2 * L for KL)."""

    def __init__(self, cfg: MLPConfig, in_features: int, out_features: int):
        super().__init__()
        self.net = _mlp([in_features, *cfg.encoder_hidden, out_features], cfg.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dim() == 2, f"x must be (B, D), got {tuple(x.shape)}"
        return self.net(x)


class MLPDecoder(nn.Module):
    """(B, L) -> (B, out_features), with the config's dropout after each hidden layer.

    Args:
        width: multiplies `cfg.decoder_hidden` (rounded, at least 1); below 1 gives the DAE
            recipe's weak stage-1 decoder from the same config as the full one.
    """

    def __init__(self, cfg: MLPConfig, latent_features: int, out_features: int,
                 width: float | None = None):
        super().__init__()
        if width is not None:
            check_width(width)
        hidden = [max(1, round(h * (width or 1.0))) for h in cfg.decoder_hidden]
        self.net = _mlp([latent_features, *hidden, out_features], cfg.activation, cfg.dropout)

    @property
    def last_layer(self) -> nn.Parameter:
        """Weight of the final linear layer (for a VQGAN-style adaptive weight)."""
        return self.net[-1].weight

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert z.dim() == 2, f"z must be (B, L), got {tuple(z.shape)}"
        return self.net(z)
