"""VQ-VAE-2's prior over its two levels (Razavi et al. 2019, sec. 3.2): a PixelCNN over the top
grid, then a PixelCNN over the bottom grid conditioned on the top codes.

The tokens are the hierarchical bottleneck's (`tokenizers.bottlenecks.hvq`): one sequence per
item, the top grid n x n first, then the bottom grid 2n x 2n, each in raster order. The top
prior models the first n^2 tokens; the bottom prior the rest, with the top grid as a spatial
conditioning of every layer (`PixelCNN(context=...)`). Both see the class label or the prompt
(each with its own text encoder). So p(x) = p(top) p(bottom | top) factorises in the
sequence's order, and this model has the interface of `ARTransformer` (forward, log_prob,
next_token_logits, sample): the evaluation's rate and the trainer's objective take it as they
take one stream. (The paper's top prior adds self-attention layers; these are gated PixelCNNs
throughout.)

Legend: B batch, n the top side, T = 5 n^2 tokens, V vocabulary (one codebook size).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from latentlab.generators.pixelcnn import PixelCNN, PixelCNNConfig
from latentlab.nn import num_parameters


def top_side(tokens: int) -> int:
    """n, the top grid's side, of a sequence of T = n^2 + (2n)^2 tokens; ValueError if none."""
    n = math.isqrt(tokens // 5)
    if n < 1 or 5 * n * n != tokens:
        raise ValueError(f"{tokens} tokens per item are not a top grid n x n followed by a "
                         "bottom grid 2n x 2n (hvq)")
    return n


class HierarchicalPixelCNN(nn.Module):
    """Top and bottom PixelCNN priors: (B, T) tokens -> logits (B, T, V) (see the module
    docstring).

    Args:
        cfg: the architecture of both PixelCNNs.
        vocab_size: V, the codebook size of both levels.
        tokens: T, the sequence length.
        num_classes: as in `PixelCNN`.
        text: a prompt encoder for the top prior; the bottom one gets its own copy.
    """

    def __init__(self, cfg: PixelCNNConfig, vocab_size: int, tokens: int, num_classes: int = 0,
                 text: nn.Module | None = None):
        super().__init__()
        n = top_side(tokens)
        self.vocab_size, self.num_classes, self.seq_len, self.split = (
            vocab_size, num_classes, tokens, n * n)
        self.top = PixelCNN(cfg, vocab_size, (n, n), num_classes, text)
        self.bottom = PixelCNN(cfg, vocab_size, (2 * n, 2 * n), num_classes,
                               copy.deepcopy(text), context=vocab_size)

    @property
    def cfg(self) -> PixelCNNConfig:
        """The architecture of both PixelCNNs."""
        return self.top.cfg

    @property
    def text(self) -> nn.Module | None:
        return self.top.text

    @property
    def null_class(self) -> int | torch.Tensor | None:
        return self.top.null_class

    @property
    def num_parameters(self) -> int:
        return num_parameters(self)

    def forward(self, indices: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits (B, T, V): the top prior's, then the bottom's given the top
        tokens (which come before every bottom token)."""
        flat = indices.reshape(len(indices), -1)
        assert flat.shape[1] == self.seq_len, (
            f"indices must be (B, {self.seq_len}), got {tuple(indices.shape)}")
        top, bottom = flat[:, :self.split], flat[:, self.split:]
        return torch.cat([self.top(top, cond), self.bottom(bottom, cond, top)], 1)

    def log_prob(self, indices: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Per-token log p(x_t | cond, x_<t): (B, T) float32, natural log."""
        flat = indices.reshape(len(indices), -1)
        top, bottom = flat[:, :self.split], flat[:, self.split:]
        return torch.cat([self.top.log_prob(top, cond),
                          self.bottom.log_prob(bottom, cond, top)], 1)

    def next_token_logits(self, prefix: torch.Tensor, cond: torch.Tensor | None = None,
                          cache: None = None, guidance: float | None = None
                          ) -> tuple[torch.Tensor, None]:
        """Logits (B, V) of token i given the decoded tokens (B, i), as `PixelCNN`'s."""
        if prefix.shape[1] < self.split:
            return self.top.next_token_logits(prefix, cond, None, guidance)
        return self.bottom.next_token_logits(prefix[:, self.split:], cond, None, guidance,
                                             context=prefix[:, :self.split])

    @torch.no_grad()
    def sample(self, n: int, cond: torch.Tensor | None = None, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None,
               guidance: float | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """The top grid, then the bottom grid given it: (n, T) int64; arguments as
        `PixelCNN.sample`'s."""
        args = dict(temperature=temperature, top_k=top_k, top_p=top_p, guidance=guidance,
                    generator=generator)
        top = self.top.sample(n, cond, **args)
        return torch.cat([top, self.bottom.sample(n, cond, **args, context=top)], 1)
