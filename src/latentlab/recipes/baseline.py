"""The baseline recipe: train a tokenizer for reconstruction, plus its bottleneck's own loss and,
optionally, a PatchGAN adversarial loss with VQGAN's adaptive weight.

Phases (one optimizer each): "autoencoder" (encoder, bottleneck, decoder) and, with the GAN on,
"discriminator".

Legend: B batch, C channels, H height, W width.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from latentlab.data.base import Batch, LatentlabDataset, collate
from latentlab.metrics.reconstruction import reconstruction_metrics
from latentlab.tokenizers.bottlenecks.usage import code_histogram, perplexity
from latentlab.tokenizers.discriminator import (
    DiscriminatorConfig,
    PatchDiscriminator,
    adaptive_weight,
    discriminator_loss,
    generator_loss,
)
from latentlab.tokenizers.tokenizer import Tokenizer
from latentlab.training.objective import Objective

EVAL_BATCH = 256


@dataclass
class LossConfig:
    reconstruction: Literal["l1", "l2"] = "l2"
    """Pixel reconstruction loss."""
    gan: bool = False
    """Add a PatchGAN adversarial loss (VQGAN); its settings are under `discriminator`."""
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    """The discriminator and how its loss is weighed (used when gan is true)."""


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean L1 or L2 distance, computed in fp32 whatever the autocast dtype."""
    x_hat = x_hat.float()
    return F.l1_loss(x_hat, x) if kind == "l1" else F.mse_loss(x_hat, x)


def eval_batches(data: LatentlabDataset, device: torch.device | str,
                 memory_format=torch.contiguous_format):
    """The whole of `data` in order, in batches, on `device`."""
    sampler = [list(range(i, min(i + EVAL_BATCH, len(data))))
               for i in range(0, len(data), EVAL_BATCH)]
    for batch in DataLoader(data, batch_sampler=sampler, collate_fn=collate):
        yield batch.to(device, memory_format)


@torch.no_grad()
def evaluate_tokenizer(tokenizer: Tokenizer, data: LatentlabDataset) -> dict[str, float]:
    """Held-out reconstruction figures (mean per item) and, if discrete, codebook usage."""
    was_training = tokenizer.training
    tokenizer.eval()
    device = tokenizer.latent_shift.device
    sums: dict[str, float] = {}
    counts = None
    for batch in eval_batches(data, device):
        rec = tokenizer(batch.x)
        for k, v in reconstruction_metrics(batch.x, rec.x_hat).items():
            sums[k] = sums.get(k, 0.0) + float(v.sum())
        if tokenizer.discrete:
            c = code_histogram(rec.bottleneck.indices, tokenizer.bottleneck.codebook_size)
            counts = c if counts is None else counts + c
    tokenizer.train(was_training)
    figures = {k: v / len(data) for k, v in sums.items()}
    if counts is not None:  # usage over the whole split: codes used at least once
        used = int((counts > 0).sum())
        figures |= {"usage": used / len(counts), "dead_codes": float(len(counts) - used),
                    "perplexity": float(perplexity(counts))}
    return figures


class TokenizerObjective(Objective):
    """Reconstruction + bottleneck loss (+ adversarial loss) for a Tokenizer."""

    def __init__(self, tokenizer: Tokenizer, cfg: LossConfig):
        super().__init__()
        self.tokenizer, self.cfg = tokenizer, cfg
        self.discriminator = None
        self.phases = ("autoencoder",)
        if cfg.gan:
            self.discriminator = PatchDiscriminator(tokenizer.cfg.in_channels, cfg.discriminator)
            self.phases = ("autoencoder", "discriminator")

    def phase_parameters(self, phase: str):
        module = self.tokenizer if phase == "autoencoder" else self.discriminator
        return [p for p in module.parameters() if p.requires_grad]

    def gan_on(self, step: int) -> bool:
        return self.discriminator is not None and step >= self.cfg.discriminator.start

    def forward(self, phase: str, batch: Batch, step: int):
        if phase == "autoencoder":
            return self.autoencoder_loss(batch.x, step)
        return self.discriminator_step_loss(batch.x, step)

    def autoencoder_loss(self, x: torch.Tensor, step: int):
        rec = self.tokenizer(x)
        rec_loss = reconstruction_loss(rec.x_hat, x, self.cfg.reconstruction)
        loss = rec_loss + rec.bottleneck.loss
        logs = {"loss/recon": rec_loss.detach(), "loss/bottleneck": rec.bottleneck.loss.detach()}
        logs |= {f"bottleneck/{k}": v.detach() for k, v in rec.bottleneck.stats.items()}
        if self.gan_on(step):
            g_loss = generator_loss(self.discriminator(rec.x_hat), self.cfg.discriminator.loss)
            # VQGAN: balance the adversarial gradient against the reconstruction gradient at
            # the decoder's last layer (Esser et al. 2021, eq. 7)
            weight = adaptive_weight(rec_loss, g_loss, self.tokenizer.decoder.last_layer,
                                     self.cfg.discriminator.max_adaptive_weight)
            loss = loss + self.cfg.discriminator.weight * weight * g_loss
            logs |= {"gan/g_loss": g_loss.detach(), "gan/adaptive_weight": weight.detach()}
        return loss, logs

    def discriminator_step_loss(self, x: torch.Tensor, step: int):
        if not self.gan_on(step):
            # not started yet: a zero loss still touching every parameter keeps DDP in step
            zero = sum(p.sum() for p in self.discriminator.parameters()) * 0.0
            return zero, {}
        with torch.no_grad():
            fake = self.tokenizer(x).x_hat
        real_logits, fake_logits = self.discriminator(x), self.discriminator(fake.detach())
        loss = discriminator_loss(real_logits, fake_logits, self.cfg.discriminator.loss)
        return loss, {"gan/d_loss": loss.detach(),
                      "gan/real_logit": real_logits.float().mean().detach(),
                      "gan/fake_logit": fake_logits.float().mean().detach()}

    def ema_model(self):
        return self.tokenizer

    def evaluate(self, data: LatentlabDataset) -> dict[str, float]:
        return evaluate_tokenizer(self.tokenizer, data)

    @torch.no_grad()
    def visualize(self, batch: Batch) -> torch.Tensor | None:
        """Originals over reconstructions: (2B, C, H, W); nothing for vector data."""
        if batch.x.ndim != 4:
            return None
        return torch.cat([batch.x.float(), self.tokenizer(batch.x).x_hat.float().clamp(-1, 1)])
