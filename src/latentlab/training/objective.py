"""What the training loop trains: an Objective owns its models and says how to score a batch.

The loop never branches on what is being trained. It asks the objective for its phases (one
optimizer each, run in order every step: e.g. ("generator", "discriminator") for a GAN), the
parameters of each phase, and the loss of a phase on a batch. The objective is an nn.Module
holding every model it trains, so one state_dict checkpoints them all and one DDP wrapper
synchronises them.

A phase can hand something on to the later phases of the same step (a coupled recipe's
autoencoder phase hands its tiny generators the detached latents it made): the loop passes it
to them with the same micro-batch, so what a phase trains on is an argument, never something
left behind in the objective by an earlier call.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from latentlab.data.base import Batch, LatentlabDataset


class PhaseOutput(NamedTuple):
    """What a phase returns for one micro-batch. A NamedTuple, not a dataclass: DDP's output
    handling (a pytree) takes it apart as it did the plain tuples before it; a dataclass would
    be one opaque leaf to it."""

    loss: torch.Tensor
    """() the scalar to minimise."""
    logs: dict[str, torch.Tensor]
    """Detached scalar tensors to log."""
    handed: Any = None
    """What the later phases of this step get for this micro-batch (detached), or None."""


class Objective(nn.Module):
    """Base class of training objectives.

    Subclasses implement `forward(phase, batch, step, handed) -> PhaseOutput` and list their
    `phases`. `handed` maps each earlier phase of this step to what it handed on for this
    micro-batch (`PhaseOutput.handed`).
    """

    phases: tuple[str, ...] = ("main",)
    unused_parameters: bool = False
    """Some parameters take no gradient in some steps (e.g. a frozen encoder in a later stage):
    DDP must then look for unused parameters. Several phases imply it."""

    def phase_parameters(self, phase: str) -> list[nn.Parameter]:
        """Parameters the optimizer of `phase` updates (default: all)."""
        return [p for p in self.parameters() if p.requires_grad]

    def forward(self, phase: str, batch: Batch, step: int, handed: dict[str, Any]
                ) -> PhaseOutput:
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
