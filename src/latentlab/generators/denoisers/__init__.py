"""Networks a process trains and samples (`dit`, `mlp`), and `Denoiser`, the interface they
implement: processes, guidance and samplers call it.

Legend: B batch, D any trailing data dims.
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor


class Denoiser(Protocol):
    """The network interface every process trains and samples.

    Args:
        x_t: (B, *D) noisy input.
        t: (B,) float times in [0, 1] (t = 0 data, t = 1 noise).
        cond: (B,) int64 class labels, (B, L) int64 prompt ids (text-conditioned networks), or
            None for an unconditional call (the null class or null prompt).

    Returns:
        (B, *D) prediction: the velocity for flow matching, eps for DDPM and the VP-SDE.
    """

    def __call__(self, x_t: Tensor, t: Tensor, cond: Tensor | None) -> Tensor: ...
