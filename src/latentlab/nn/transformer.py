"""Transformer pieces shared by the DiT denoiser and the autoregressive prior: multi-head
self-attention (optionally causal, optionally continuing from cached keys and values) and the
two-layer MLP.

Legend: B batch, T tokens fed now, P tokens already cached, D width, N heads, K channels per
head (D = N * K).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

KV = tuple[torch.Tensor, torch.Tensor]
"""Keys and values of one attention layer, each (B, N, P, K)."""


SHORT_SEQUENCE = 64


def _short_sequence_backend(q: torch.Tensor):
    """SDPA's math backend for short sequences on the CPU.

    There the flash kernel's backward is ~10x slower than its forward at 16 tokens (35% of a
    DiT step on an 8x8 latent); the math backend made that step 1.4x faster (measured with
    benchmarks/generator_speed.py). Elsewhere: torch's own choice.
    """
    if q.device.type == "cpu" and q.shape[-2] <= SHORT_SEQUENCE:
        return sdpa_kernel([SDPBackend.MATH])
    return contextlib.nullcontext()


class SelfAttention(nn.Module):
    """Multi-head self-attention through `F.scaled_dot_product_attention`: (B, T, D) -> (B, T, D).

    Args:
        width: D.
        heads: N; must divide D.
        dropout: attention-probability dropout, active in training mode only.
    """

    def __init__(self, width: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if heads < 1 or width % heads:
            raise ValueError(f"heads: must be >= 1 and divide width {width}, got {heads}")
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, causal: bool = False, past: KV | None = None,
                keys: torch.Tensor | None = None) -> tuple[torch.Tensor, KV]:
        """Attend over `past` (if any) followed by `x`.

        Args:
            x: (B, T, D), the tokens fed now.
            causal: token i of x sees only itself, the tokens before it and all of `past`.
            past: cached keys and values (B, N, P, K) of the P tokens before x.
            keys: (B, P + T) bool, False at positions no query may see (padding); every query
                must keep at least one visible key.

        Returns:
            The output (B, T, D) and the keys and values (B, N, P + T, K) of past and x, to be
            passed as `past` when continuing the sequence.
        """
        q, k, v = rearrange(self.qkv(x), "b t (three n k) -> three b n t k", three=3, n=self.heads)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        t, s = q.shape[2], k.shape[2]  # s = P + T
        mask, is_causal = None, False
        if causal and t > 1:
            if s == t:
                is_causal = True
            else:
                # SDPA's is_causal aligns the mask top-left; with a cache the queries are the last
                # t of the s positions, so query i may see keys j <= (s - t) + i (bottom-right)
                mask = torch.ones(t, s, dtype=torch.bool, device=x.device).tril(s - t)
        if keys is not None:
            if is_causal:  # SDPA takes a mask or is_causal, not both
                mask, is_causal = torch.ones(t, s, dtype=torch.bool, device=x.device).tril(), False
            mask = keys[:, None, None, :] if mask is None else mask & keys[:, None, None, :]
        with _short_sequence_backend(q):
            out = F.scaled_dot_product_attention(  # (B, N, T, K), scale 1/sqrt(K)
                q, k, v, attn_mask=mask, is_causal=is_causal,
                dropout_p=self.dropout if self.training else 0.0)
        return self.proj(rearrange(out, "b n t k -> b t (n k)")), (k, v)


class MLP(nn.Module):
    """Linear -> GELU (tanh approximation, as GPT-2 and DiT) -> Linear: (B, T, D) -> (B, T, D).

    Args:
        width: D.
        mlp_ratio: hidden width = int(D * mlp_ratio).
        dropout: dropout on the output, active in training mode only.
    """

    def __init__(self, width: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.fc1, self.fc2 = nn.Linear(width, hidden), nn.Linear(hidden, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(F.gelu(self.fc1(x), approximate="tanh")))
