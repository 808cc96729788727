"""The text side of a text-conditioned generator: prompts as token ids, encoded by a small
transformer trained with the generator, and the cross-attention through which a network reads
them.

Token-id convention (`latentlab.data.text.TextTokenizer` makes them): (B, L) int64, every
prompt starts with a begin token, padding is `pad_id` after the prompt, so each row has at
least one real token. The null prompt (classifier-free guidance, prompt dropout) is the
encoding of the empty prompt, the begin token alone: a network fed it sees no content.

Legend: B batch, L tokens per prompt (max_len), E text width, T image tokens, D network width,
N heads, K channels per head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from latentlab.nn.transformer import MLP, SelfAttention


@dataclass
class TextContext:
    """Encoded prompts, as a network consumes them.

    Attributes:
        tokens: (B, L, E) one vector per token.
        mask: (B, L) bool, True at real tokens (False at padding).
        pooled: (B, E) the mean of the real tokens' vectors.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L, E), (B, L) bool -> (B, E): the mean over the positions where mask is True."""
    weights = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class TextBlock(nn.Module):
    """Pre-norm transformer block over prompt tokens, padding masked out of the attention."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn, self.mlp = SelfAttention(width, heads), MLP(width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), keys=mask)[0]
        return x + self.mlp(self.norm2(x))


class TextEncoder(nn.Module):
    """A small bidirectional transformer over prompt token ids, trained with the generator.

    Args:
        vocab_size: ids lie in [0, vocab_size).
        max_len: L, the longest prompt in tokens (learned positions).
        null_ids: (L,) int64, the null prompt's ids (what `None` conditioning means).
        pad_id: the padding id.
        width: E; depth, heads: the transformer's.
    """

    def __init__(self, vocab_size: int, max_len: int, null_ids: torch.Tensor, pad_id: int = 0,
                 width: int = 128, depth: int = 2, heads: int = 4):
        super().__init__()
        if null_ids.shape != (max_len,):
            raise ValueError(f"null_ids: must be ({max_len},), got {tuple(null_ids.shape)}")
        self.width, self.max_len, self.pad_id = width, max_len, pad_id
        self.register_buffer("null_ids", null_ids.to(torch.int64).clone(), persistent=False)
        self.embed = nn.Embedding(vocab_size, width)
        self.pos = nn.Parameter(torch.zeros(max_len, width))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(TextBlock(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width)

    def null(self, batch: int) -> torch.Tensor:
        """(B, L) ids of the null prompt."""
        return self.null_ids.expand(batch, -1)

    def forward(self, ids: torch.Tensor) -> TextContext:
        """(B, L) int64 token ids -> their `TextContext`."""
        if ids.ndim != 2 or ids.shape[1] != self.max_len:
            raise ValueError(f"text ids: expected (B, {self.max_len}), got {tuple(ids.shape)}")
        mask = ids != self.pad_id
        x = self.embed(ids) + self.pos
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm(x)
        return TextContext(x, mask, masked_mean(x, mask))


class CrossAttention(nn.Module):
    """Image tokens attend to prompt tokens: (B, T, D) queries, (B, L, E) keys and values with
    padding masked out -> (B, T, D).

    Args:
        width: D; context_width: E; heads: N (must divide D).
    """

    def __init__(self, width: int, context_width: int, heads: int):
        super().__init__()
        if heads < 1 or width % heads:
            raise ValueError(f"heads: must be >= 1 and divide width {width}, got {heads}")
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(context_width, 2 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, context: TextContext) -> torch.Tensor:
        q = rearrange(self.q(x), "b t (n k) -> b n t k", n=self.heads)
        k, v = rearrange(self.kv(context.tokens.to(x.dtype)), "b l (two n k) -> two b n l k",
                         two=2, n=self.heads)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=context.mask[:, None, None, :])
        return self.proj(rearrange(out, "b n t k -> b t (n k)"))
