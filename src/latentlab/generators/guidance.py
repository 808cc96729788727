"""Classifier-free guidance (Ho & Salimans 2022) and the label dropout that trains for it.

Convention: pred = uncond + scale * (cond - uncond), so scale 0 is the unconditional
prediction, scale 1 the conditional one and scale > 1 extrapolates past it. (Ho & Salimans
write (1 + w) cond - w uncond; their w is our scale - 1.) The unconditional prediction is the
denoiser fed the null condition, which the network learns through `drop_labels`: the null class
(an extra label index, an int) for labels (B,), the null prompt's ids (an (L,) tensor) for
prompts (B, L). A network's `null_class` property gives it.

Legend: B batch, D any trailing data dims, L prompt tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor

from latentlab.generators.denoisers import Denoiser

NullCond = int | Tensor
"""The null condition: a label index (for (B,) labels) or one row of ids (L,) (for (B, L)
prompts)."""


def null_like(cond: Tensor, null_class: NullCond) -> Tensor:
    """The null condition in the shape, dtype and device of `cond`: (B,) or (B, L)."""
    if isinstance(null_class, Tensor):
        assert null_class.shape == cond.shape[1:], (
            f"null condition {tuple(null_class.shape)} does not fit cond {tuple(cond.shape)}")
        return null_class.to(cond.device, cond.dtype).expand(cond.shape)
    return torch.full_like(cond, null_class)


def guided(denoiser: Denoiser, scale: float, null_class: NullCond) -> Denoiser:
    """Wrap a conditional denoiser with classifier-free guidance.

    The wrapper evaluates the conditional and unconditional predictions in one batched call
    (the batch is doubled), then mixes them.

    Args:
        denoiser: (x_t (B, *D), t (B,), cond (B,) or (B, L) int64) -> (B, *D).
        scale: guidance scale (0 unconditional, 1 conditional).
        null_class: the null condition: label index meaning "no class", or the (L,) ids of the
            null prompt.

    Returns:
        A denoiser with the same signature; it raises ValueError when called with cond None.
    """

    def guided_denoiser(x_t: Tensor, t: Tensor, cond: Tensor | None) -> Tensor:
        if cond is None:
            raise ValueError(
                f"classifier-free guidance (scale {scale}) needs class labels or prompts, got "
                "cond=None; pass cond, or drop the guidance scale for unconditional sampling"
            )
        null = null_like(cond, null_class)
        pred = denoiser(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([cond, null]))
        pred_cond, pred_uncond = pred.chunk(2)  # (B, *D) each
        return pred_uncond + scale * (pred_cond - pred_uncond)

    return guided_denoiser


def drop_labels(
    cond: Tensor, p: float, null_class: NullCond, generator: torch.Generator | None = None
) -> Tensor:
    """Replace each label (prompt) by the null one with probability `p` (CFG training, Ho &
    Salimans 2022).

    Args:
        cond: (B,) int64 labels or (B, L) int64 prompt ids.
        p: drop probability in [0, 1].
        null_class: the label index meaning "no class", or the null prompt's (L,) ids; a
            dropped prompt is replaced whole.
        generator: source of randomness (B draws, one per item).

    Returns:
        cond's shape, a new tensor.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"drop probability must be in [0, 1], got {p}")
    drop = torch.rand(cond.shape[:1], generator=generator, device=cond.device) < p  # (B,)
    drop = drop.view(-1, *[1] * (cond.ndim - 1))  # broadcasts over a prompt's ids
    return torch.where(drop, null_like(cond, null_class), cond)
