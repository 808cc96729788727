"""What the training loop trains: an Objective owns its models and says how to score a batch.

The loop never branches on what is being trained. It asks the objective for its phases (one
optimizer each, run in order every step: e.g. ("generator", "discriminator") for a GAN), the
parameters of each phase, and the loss of a phase on a batch. The objective is an nn.Module
holding every model it trains, so one state_dict checkpoints them all and one DDP wrapper
synchronises them.
"""

from __future__ import annotations

import torch
from torch import nn

from latentlab.data.base import Batch, LatentlabDataset


class Objective(nn.Module):
    """Base class of training objectives.

    Subclasses implement `forward(phase, batch, step) -> (loss, logs)` with `loss` a scalar tensor
    to minimise and `logs` a dict of detached scalar tensors, and list their `phases`.
    """

    phases: tuple[str, ...] = ("main",)
    unused_parameters: bool = False
    """Some parameters take no gradient in some steps (e.g. a frozen encoder in a later stage):
    DDP must then look for unused parameters. Several phases imply it."""

    def phase_parameters(self, phase: str) -> list[nn.Parameter]:
        """Parameters the optimizer of `phase` updates (default: all)."""
        return [p for p in self.parameters() if p.requires_grad]

    def forward(self, phase: str, batch: Batch, step: int
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def stage_starts(self, step: int) -> bool:
        """True when a new training stage begins at `step` (e.g. DAE stage 2): the loop first
        copies the EMA weights into the live `ema_model()`, so the stage continues from the
        averaged weights and anything frozen from then on equals its EMA bit for bit."""
        return False

    def ema_model(self) -> nn.Module | None:
        """The sub-model whose weights are averaged for evaluation (None: no EMA)."""
        return None

    @torch.no_grad()
    def evaluate(self, data: LatentlabDataset) -> dict[str, float]:
        """Held-out figures, run on the main process with EMA weights swapped in."""
        return {}

    @torch.no_grad()
    def visualize(self, batch: Batch) -> torch.Tensor | None:
        """Images (B, C, H, W) in [-1, 1] to save as a grid during training, or None."""
        return None
