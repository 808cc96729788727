"""The one time convention of every continuous process in latentlab, defined here and only here.

t is a float in [0, 1]: t = 0 is data, t = 1 is noise (DESIGN.md section 4.2). Training draws t
with `sample_time`; samplers integrate from T_NOISE down to T_DATA. Discrete processes (DDPM) map
their step index onto this interval (k -> t = k / T), so every denoiser sees the same t.

Legend: N number of times drawn, S number of solver steps.
"""

from __future__ import annotations

import torch
from torch import Tensor

T_DATA = 0.0
"""Time of the data end of every path."""
T_NOISE = 1.0
"""Time of the noise end of every path."""

TIME_SAMPLING = ("uniform", "logit_normal")


def sample_time(
    n: int,
    kind: str = "uniform",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Draw training times in [T_DATA, T_NOISE].

    Args:
        n: how many times to draw.
        kind: "uniform" (U[0, 1]) or "logit_normal" (sigmoid of N(0, 1), which puts more weight
            on the middle of the path; Esser et al. 2024, SD3, section 3.1).
        generator: source of randomness.
        device, dtype: of the result.

    Returns:
        (N,) times.
    """
    if kind == "uniform":
        return torch.rand(n, generator=generator, device=device, dtype=dtype)
    if kind == "logit_normal":
        return torch.sigmoid(torch.randn(n, generator=generator, device=device, dtype=dtype))
    raise ValueError(f"time sampling must be one of {', '.join(TIME_SAMPLING)}, got {kind!r}")


def time_grid(
    steps: int,
    start: float = T_NOISE,
    end: float = T_DATA,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Evenly spaced solver grid from `start` to `end` (noise to data by default).

    Returns:
        (S + 1,) times, both end points included, in `dtype` but at least float32: in bfloat16
        a time near 1 is rounded to steps of 1/256, four units of the time embedding's scale
        (`nn.embeddings.TIME_SCALE`).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return torch.linspace(start, end, steps + 1, device=device,
                          dtype=torch.promote_types(dtype, torch.float32))
