"""Embeddings shared by generators: the sinusoidal timestep embedding.

Legend: B batch, E embedding width.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

TIME_SCALE = 1000.0
"""t in [0, 1] is multiplied by this before the sinusoids, so the frequencies cover the same
range as the integer timesteps 0..1000 the embedding was designed for (Ho et al. 2020)."""


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of continuous times (Vaswani et al. 2017; as in DDPM and DiT).

    Args:
        t: (B,) times in [0, 1] (t = 0 data, t = 1 noise); scaled by TIME_SCALE internally.
        dim: E, the embedding width; an odd E gets one zero column at the end.
        max_period: the longest wavelength, in units of scaled time.

    Returns:
        (B, E) float32 embedding [cos(w t), sin(w t)] with frequencies w from 1 to 1 / max_period.
    """
    assert t.ndim == 1, f"t must be (B,), got {tuple(t.shape)}"
    half = dim // 2
    # computed in fp32 even under autocast: sin/cos of arguments up to 1000 need the precision
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    )
    args = (t.float() * TIME_SCALE)[:, None] * freqs[None]  # (B, E/2)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb
