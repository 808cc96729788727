"""Exponential moving average of a model's weights, used for evaluation and sampling."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import nn


class EMA(nn.Module):
    """Keeps `shadow`, a frozen copy of `model` whose weights trail the live ones.

    After each optimizer step, shadow <- decay * shadow + (1 - decay) * live. Buffers (norm
    statistics and the like) are copied, not averaged. Early on the decay is lowered to
    (1 + n) / (10 + n) after n updates, so the average does not remember the random init.
    """

    def __init__(self, model: nn.Module, decay: float):
        super().__init__()
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        n = int(self.updates)
        decay = min(self.decay, (1 + n) / (10 + n))
        # one fused call over all tensors (the shadow is a deepcopy: same parameter order)
        torch._foreach_lerp_(list(self.shadow.parameters()),
                             [p.detach() for p in model.parameters()], 1.0 - decay)
        for b, live in zip(self.shadow.buffers(), model.buffers(), strict=True):
            b.copy_(live)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into the live `model` (parameters only)."""
        for live, avg in zip(model.parameters(), self.shadow.parameters(), strict=True):
            live.copy_(avg)

    @contextlib.contextmanager
    def swapped_into(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the EMA weights into `model` (for evaluation), then restore."""
        saved = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow.state_dict())
        try:
            yield model
        finally:
            model.load_state_dict(saved)
