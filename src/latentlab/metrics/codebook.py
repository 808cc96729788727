"""How a discrete latent uses its codebook.

Legend: K codebook size.
"""

from __future__ import annotations

import torch


def code_counts(indices: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """(any shape) int64 indices -> (K,) float64 counts."""
    return torch.bincount(indices.flatten().cpu(), minlength=codebook_size).double()


def codebook_metrics(counts: torch.Tensor) -> dict[str, float]:
    """Usage figures of a code histogram (K,).

    usage: fraction of codes used at least once; dead_codes: codes never used; perplexity:
    exp of the entropy of the code distribution (K when all codes are equally used, 1 when one
    code takes everything).
    """
    total = counts.sum()
    p = counts / total.clamp_min(1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    used = int((counts > 0).sum())
    return {"usage": used / len(counts), "dead_codes": float(len(counts) - used),
            "perplexity": float(entropy.exp())}
