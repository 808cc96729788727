"""Reconstruction quality in the pixel convention of `latentlab.pixels` (range [-1, 1]).

Legend: B batch, C channels, H height, W width.
"""

from __future__ import annotations

import torch

from latentlab.pixels import DATA_RANGE, HIGH, LOW


def reconstruction_metrics(x: torch.Tensor, x_hat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-item MSE; for (B, C, H, W) images also PSNR and SSIM (SSIM needs H, W >= 7).

    Returns per-item tensors (B,) so callers can average over any number of batches. PSNR is
    per image, then averaged (the convention of image-codec papers), in dB for range [-1, 1].
    Vectors (B, D) get MSE only: they have no pixel range.
    """
    # imported here: torchmetrics costs a second at start-up, which `--help` should not pay
    from torchmetrics.functional.image import (
        peak_signal_noise_ratio,
        structural_similarity_index_measure,
    )

    assert x.shape == x_hat.shape, f"got {tuple(x.shape)} and {tuple(x_hat.shape)}"
    if x.ndim != 4:
        return {"mse": (x.float() - x_hat.float()).pow(2).flatten(1).mean(1)}
    x, x_hat = x.float(), x_hat.float().clamp(LOW, HIGH)
    mse = (x - x_hat).pow(2).flatten(1).mean(1)
    out = {"mse": mse,
           "psnr": peak_signal_noise_ratio(x_hat, x, data_range=DATA_RANGE, reduction="none",
                                           dim=(1, 2, 3))}
    if min(x.shape[-2:]) >= 7:
        # 7x7 Gaussian window: fits the 8x8 digits (the usual 11x11 would not)
        out["ssim"] = structural_similarity_index_measure(
            x_hat, x, data_range=DATA_RANGE, kernel_size=7, reduction="none")
    return out
