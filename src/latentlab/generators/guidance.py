"""Classifier-free guidance (Ho & Salimans 2022) and the label dropout that trains for it.

Convention: pred = uncond + scale * (cond - uncond), so scale 0 is the unconditional
prediction, scale 1 the conditional one and scale > 1 extrapolates past it. (Ho & Salimans
write (1 + w) cond - w uncond; their w is our scale - 1.) The unconditional prediction is the
denoiser fed the null class, an extra label index the network learns through `drop_labels`.

Legend: B batch, D any trailing data dims.
"""

from __future__ import annotations

import torch
from torch import Tensor

from latentlab.generators.denoisers import Denoiser


def guided(denoiser: Denoiser, scale: float, null_class: int) -> Denoiser:
    """Wrap a class-conditional denoiser with classifier-free guidance.

    The wrapper evaluates the conditional and unconditional predictions in one batched call
    (the batch is doubled), then mixes them.

    Args:
        denoiser: (x_t (B, *D), t (B,), cond (B,) int64) -> (B, *D).
        scale: guidance scale (0 unconditional, 1 conditional).
        null_class: label index meaning "no class".

    Returns:
        A denoiser with the same signature; it raises ValueError when called with cond None.
    """

    def guided_denoiser(x_t: Tensor, t: Tensor, cond: Tensor | None) -> Tensor:
        if cond is None:
            raise ValueError(
                f"classifier-free guidance (scale {scale}) needs class labels, got cond=None; "
                "pass cond, or drop the guidance scale for unconditional sampling"
            )
        null = torch.full_like(cond, null_class)
        pred = denoiser(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([cond, null]))
        pred_cond, pred_uncond = pred.chunk(2)  # (B, *D) each
        return pred_uncond + scale * (pred_cond - pred_uncond)

    return guided_denoiser


def drop_labels(
    cond: Tensor, p: float, null_class: int, generator: torch.Generator | None = None
) -> Tensor:
    """Replace each label by `null_class` with probability `p` (CFG training, Ho & Salimans 2022).

    Args:
        cond: (B,) int64 labels.
        p: drop probability in [0, 1].
        null_class: the label index meaning "no class".
        generator: source of randomness.

    Returns:
        (B,) labels, a new tensor.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"drop probability must be in [0, 1], got {p}")
    drop = torch.rand(cond.shape, generator=generator, device=cond.device) < p
    return torch.where(drop, torch.full_like(cond, null_class), cond)
