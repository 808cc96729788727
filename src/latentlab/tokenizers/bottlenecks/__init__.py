"""Bottlenecks: what sits between a tokenizer's encoder and decoder, one per file.

    identity  plain autoencoder, optional per-channel normalisation   identity.py
    kl        diagonal Gaussian posterior, KL to N(0, I)               kl.py
    vq        nearest codebook entry (EMA or loss, k-means, restarts)  vq.py
    lfq       per-channel sign, implicit codebook of 2^C               lfq.py
    fsq       bounded per-channel rounding, codebook prod(levels)      fsq.py
    gumbel    relaxed categorical over a codebook, KL to uniform       gumbel.py
    hvq       top and bottom codebooks at two resolutions (VQ-VAE-2)   hvq.py

`BottleneckConfig` is one of their configs, picked by its `kind`; `build_bottleneck` makes that
bottleneck for a given latent channel count.
"""

from __future__ import annotations

from latentlab.tokenizers.bottlenecks.base import Bottleneck, BottleneckOutput
from latentlab.tokenizers.bottlenecks.fsq import FiniteScalarQuantizer, FSQConfig
from latentlab.tokenizers.bottlenecks.gumbel import GumbelConfig, GumbelQuantizer
from latentlab.tokenizers.bottlenecks.hvq import HierarchicalVQ, HVQConfig
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
    "gumbel": GumbelQuantizer,
    "hvq": HierarchicalVQ,
}
"""kind -> class; each class takes (channels, its config)."""

BottleneckConfig = (IdentityConfig | KLConfig | VQConfig | LFQConfig | FSQConfig | GumbelConfig
                    | HVQConfig)
"""A bottleneck's settings, a tagged union keyed by `kind`."""


def build_bottleneck(cfg: BottleneckConfig, channels: int) -> Bottleneck:
    """The bottleneck `cfg.kind` with `channels` latent channels (what the decoder receives)."""
    return BOTTLENECKS[cfg.kind](channels, cfg)


__all__ = [
    "BOTTLENECKS", "Bottleneck", "BottleneckConfig", "BottleneckOutput", "FSQConfig",
    "FiniteScalarQuantizer", "GumbelConfig", "GumbelQuantizer", "IdentityBottleneck",
    "IdentityConfig", "KLBottleneck", "KLConfig",
    "LFQConfig", "LookupFreeQuantizer", "VQConfig", "VectorQuantizer", "build_bottleneck",
]
