"""Bottlenecks: what sits between a tokenizer's encoder and decoder, one per file.

    identity  plain autoencoder, optional per-channel normalisation   identity.py
    kl        diagonal Gaussian posterior, KL to N(0, I)               kl.py
    vq        nearest codebook entry (EMA or loss, k-means, restarts)  vq.py
    lfq       per-channel sign, implicit codebook of 2^C               lfq.py
    fsq       bounded per-channel rounding, codebook prod(levels)      fsq.py

`BottleneckConfig` picks one by `kind` and holds every kind's settings; `build_bottleneck` makes
it for a given latent channel count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from latentlab.tokenizers.bottlenecks.base import Bottleneck, BottleneckOutput
from latentlab.tokenizers.bottlenecks.fsq import FiniteScalarQuantizer, FSQConfig
from latentlab.tokenizers.bottlenecks.identity import IdentityBottleneck, IdentityConfig
from latentlab.tokenizers.bottlenecks.kl import KLBottleneck, KLConfig
from latentlab.tokenizers.bottlenecks.lfq import LFQConfig, LookupFreeQuantizer
from latentlab.tokenizers.bottlenecks.vq import VectorQuantizer, VQConfig

BOTTLENECKS: dict[str, type[Bottleneck]] = {
    "identity": IdentityBottleneck,
    "kl": KLBottleneck,
    "vq": VectorQuantizer,
    "lfq": LookupFreeQuantizer,
    "fsq": FiniteScalarQuantizer,
}
"""kind -> class; each class takes (channels, its config) and the config is the field of
`BottleneckConfig` named like the kind."""


@dataclass
class BottleneckConfig:
    kind: Literal["identity", "kl", "vq", "lfq", "fsq"] = "identity"
    """Which bottleneck: identity (plain AE), kl (VAE), vq, lfq or fsq."""
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    """Settings of the identity bottleneck (kind: identity)."""
    kl: KLConfig = field(default_factory=KLConfig)
    """Settings of the KL bottleneck (kind: kl)."""
    vq: VQConfig = field(default_factory=VQConfig)
    """Settings of the vector quantiser (kind: vq)."""
    lfq: LFQConfig = field(default_factory=LFQConfig)
    """Settings of the lookup-free quantiser (kind: lfq)."""
    fsq: FSQConfig = field(default_factory=FSQConfig)
    """Settings of the finite scalar quantiser (kind: fsq); len(levels) must equal the latent
    channels."""

    def __post_init__(self):
        if self.kind not in BOTTLENECKS:
            raise ValueError(f"kind: must be one of {', '.join(BOTTLENECKS)}, got {self.kind!r}")


def build_bottleneck(cfg: BottleneckConfig, channels: int) -> Bottleneck:
    """The bottleneck `cfg.kind` with `channels` latent channels (what the decoder receives)."""
    return BOTTLENECKS[cfg.kind](channels, getattr(cfg, cfg.kind))


__all__ = [
    "BOTTLENECKS", "Bottleneck", "BottleneckConfig", "BottleneckOutput", "FSQConfig",
    "FiniteScalarQuantizer", "IdentityBottleneck", "IdentityConfig", "KLBottleneck", "KLConfig",
    "LFQConfig", "LookupFreeQuantizer", "VQConfig", "VectorQuantizer", "build_bottleneck",
]
