"""What every recipe shares: the loss settings, the reconstruction loss and the held-out
evaluation of a tokenizer.

Legend: B batch, C channels, H height, W width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from latentlab.config import switched
from latentlab.data.base import LatentlabDataset, eval_batches
from latentlab.metrics.reconstruction import reconstruction_metrics
from latentlab.tokenizers.bottlenecks.usage import code_histogram, perplexity
from latentlab.tokenizers.discriminator import (
    DiscriminatorConfig,
)
from latentlab.tokenizers.tokenizer import Tokenizer


@dataclass
class LossConfig:
    reconstruction: Literal["l1", "l2"] = "l2"
    """Pixel reconstruction loss."""
    gan: bool = False
    """Add a PatchGAN adversarial loss (VQGAN); its settings are under `discriminator`."""
    discriminator: DiscriminatorConfig | None = None
    """The discriminator and how its loss is weighed: only when gan is true (its defaults when
    not given)."""
    perceptual: float = 0.0
    """Weight of a perceptual distance added to the reconstruction loss (LPIPS-style, over a
    network of latentlab's own, no downloaded weights: `metrics.perceptual`); 0 is off. Images
    only."""
    perceptual_net: str = ""
    """The perceptual distance's network, a torch.export program (.pt2) returning a tuple of
    feature maps; '' is the self-supervised network of the run's data, exported to the feature
    cache when the run starts (`evaluation.perceptual`)."""

    def __post_init__(self):
        self.discriminator = switched(self.discriminator, self.gan, DiscriminatorConfig)
        if not (self.perceptual >= 0 and math.isfinite(self.perceptual)):
            raise ValueError(f"perceptual: must be a finite weight >= 0, got {self.perceptual}")


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean L1 or L2 distance, computed in fp32 whatever the autocast dtype."""
    x_hat = x_hat.float()
    return F.l1_loss(x_hat, x) if kind == "l1" else F.mse_loss(x_hat, x)


@torch.no_grad()
def evaluate_tokenizer(tokenizer: Tokenizer, data: LatentlabDataset,
                       decoder: nn.Module | None = None) -> dict[str, float]:
    """Held-out reconstruction figures (mean per item) and, if discrete, codebook usage.
    `decoder` replaces the tokenizer's own (the DAE's weak stage-1 decoder)."""
    was_training = tokenizer.training
    tokenizer.eval()
    device = tokenizer.latent_shift.device
    sums: dict[str, float] = {}
    counts = None
    for batch in eval_batches(data, device):
        out = tokenizer.encode(batch.x)
        x_hat = (decoder or tokenizer.decoder)(out.latent)
        for k, v in reconstruction_metrics(batch.x, x_hat).items():
            sums[k] = sums.get(k, 0.0) + float(v.sum())
        if tokenizer.discrete:
            c = code_histogram(out.indices, tokenizer.bottleneck.codebook_size)
            counts = c if counts is None else counts + c
    tokenizer.train(was_training)
    figures = {k: v / len(data) for k, v in sums.items()}
    if counts is not None:  # usage over the whole split: codes used at least once
        used = int((counts > 0).sum())
        figures |= {"usage": used / len(counts), "dead_codes": float(len(counts) - used),
                    "perplexity": float(perplexity(counts))}
    return figures
