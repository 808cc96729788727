"""Self-attention over the positions of a feature map, as in the mid block of the LDM/VQGAN
autoencoders (taming-transformers `AttnBlock`), with optional multiple heads.

Legend: B batch, C channels, H height, W width, N heads, D channels per head (C = N * D).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from latentlab.nn.blocks import group_norm


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """The layout of a (B, C, H, W) tensor: channels_last or the default contiguous one."""
    channels_last = (x.dim() == 4 and not x.is_contiguous()
                     and x.is_contiguous(memory_format=torch.channels_last))
    return torch.channels_last if channels_last else torch.contiguous_format


class Attention(nn.Module):
    """GroupNorm -> 1x1 qkv -> softmax attention over the H*W positions -> 1x1 proj, plus the
    input: (B, C, H, W) -> (B, C, H, W).

    The output projection starts at zero, so the block starts as the identity and the network
    around it trains as if it were absent until attention proves useful (LDM's SpatialTransformer
    wraps its proj_out in `zero_module` for this; DiT's adaLN-Zero is the same idea). Attention
    costs (H*W)^2, so it belongs at the lowest resolution only.

    Args:
        channels: C, the feature channels.
        heads: N; C must be divisible by N. One head (the default) is LDM's AttnBlock.
    """

    def __init__(self, channels: int, heads: int = 1):
        super().__init__()
        if heads < 1 or channels % heads:
            raise ValueError(f"heads: must be >= 1 and divide the {channels} channels, "
                             f"got {heads}")
        self.heads = heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dim() == 4, f"x must be (B, C, H, W), got {tuple(x.shape)}"
        h, w = x.shape[-2:]
        qkv = self.qkv(self.norm(x))  # (B, 3C, H, W)
        q, k, v = rearrange(qkv, "b (three n d) h w -> three b n (h w) d", three=3, n=self.heads)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, N, H*W, D), scale 1/sqrt(D)
        out = rearrange(out, "b n (h w) d -> b (n d) h w", h=h, w=w)
        # back to the input's layout: a channels_last x plus an NCHW branch would be a slow
        # mixed-layout add, and every conv after this block would inherit the wrong layout
        out = out.contiguous(memory_format=_memory_format(x))
        return x + self.proj(out)
