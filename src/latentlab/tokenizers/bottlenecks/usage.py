"""Codebook usage figures shared by the discrete bottlenecks (VQ, LFQ, FSQ).

Two figures say whether a codebook collapses:
- perplexity: exp of the entropy of the code histogram of one batch; K for a uniform use of K
  codes, 1 when every token takes the same code;
- usage: the fraction of the K codes in use. In training it is measured over a window of recent
  steps (an EMA of per-step counts), since one small batch cannot touch a large codebook; in
  eval, where no state is updated, over the batch at hand.

Legend: N tokens, K codebook size.
"""

from __future__ import annotations

import torch
from torch import nn

from latentlab.tokenizers.bottlenecks.sync import all_reduce_sum_

USAGE_DECAY = 0.99
"""Decay of the usage EMA: a window of about 1 / (1 - decay) = 100 training steps."""


def code_histogram(indices: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Indices of any shape -> (K,) float32 count of each code."""
    return torch.bincount(indices.flatten(), minlength=codebook_size).float()


def perplexity(counts: torch.Tensor) -> torch.Tensor:
    """(K,) counts -> scalar exp(entropy) of their distribution (0 log 0 taken as 0)."""
    p = counts / counts.sum().clamp_min(1)
    return torch.exp(-torch.special.xlogy(p, p).sum())


class CodeUsage(nn.Module):
    """Tracks how many codes are in use over recent training steps.

    The buffer `counts` is an EMA of per-step code counts. A code counts as used while its EMA
    exceeds what one assignment leaves after a full window, (1 - d) * d**W with W = 1 / (1 - d):
    roughly "picked at least once in the last W steps".
    """

    def __init__(self, codebook_size: int, decay: float = USAGE_DECAY):
        super().__init__()
        self.codebook_size, self.decay = codebook_size, decay
        window = round(1 / (1 - decay))
        self.floor = (1 - decay) * decay**window
        self.register_buffer("counts", torch.zeros(codebook_size))

    def forward(self, indices: torch.Tensor, counts: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        """Update the window (training) and return {"perplexity", "usage"}, detached.

        Args:
            indices: (B, *S) int64 codes of this batch.
            counts: (K,) their histogram if the caller already has it, summed over ranks.
        """
        with torch.no_grad():
            if counts is None:
                counts = code_histogram(indices, self.codebook_size)
                if self.training:
                    all_reduce_sum_(counts)  # every rank logs (and keeps) the global window
            if self.training:
                self.counts.lerp_(counts, 1 - self.decay)
                usage = (self.counts > self.floor).float().mean()
            else:
                usage = (counts > 0).float().mean()
            return {"perplexity": perplexity(counts), "usage": usage}
