"""The baseline recipe: train a decomposer for reconstruction alone.

Legend: B batch, C channels, H height, W width.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from latentlab.data.base import Batch, LatentlabDataset, collate
from latentlab.metrics.reconstruction import reconstruction_metrics
from latentlab.tokenizers.autoencoder import Autoencoder
from latentlab.training.objective import Objective

EVAL_BATCH = 256


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


class ReconstructionObjective(Objective):
    """Reconstruct x through the autoencoder with an L1 or L2 loss."""

    def __init__(self, model: Autoencoder, loss: Literal["l1", "l2"] = "l2"):
        super().__init__()
        self.model, self.loss_kind = model, loss

    def forward(self, phase: str, batch: Batch, step: int):
        loss = reconstruction_loss(self.model(batch.x), batch.x, self.loss_kind)
        return loss, {"loss/recon": loss.detach()}

    def ema_model(self):
        return self.model

    @torch.no_grad()
    def evaluate(self, data: LatentlabDataset) -> dict[str, float]:
        device = next(self.parameters()).device
        sums: dict[str, float] = {}
        for batch in eval_batches(data, device):
            for k, v in reconstruction_metrics(batch.x, self.model(batch.x)).items():
                sums[k] = sums.get(k, 0.0) + float(v.sum())
        return {k: v / len(data) for k, v in sums.items()}

    @torch.no_grad()
    def visualize(self, batch: Batch) -> torch.Tensor:
        """Originals over reconstructions: (2B, C, H, W)."""
        return torch.cat([batch.x, self.model(batch.x).float().clamp(-1, 1)])
