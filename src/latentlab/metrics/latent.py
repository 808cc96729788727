"""How a latent space is organised: Lipschitz complexity of the maps into and out of it,
nearest-neighbour class structure, and the spread of its vectors (DAE paper, `004_*.txt`,
appendices B.2 and B.3).

Legend: N items, D flattened item size, B batch, P pairs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange


def _flat(x: torch.Tensor) -> torch.Tensor:
    """(N, ...) -> (N, D) float64."""
    return rearrange(x, "n ... -> n (...)").double()


@torch.no_grad()
def _apply(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
           batch_size: int) -> torch.Tensor:
    return torch.cat([fn(part) for part in x.split(batch_size)])


def lipschitz(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, pairs: int = 2000,
              quantile: float = 0.95, generator: torch.Generator | None = None,
              rms: bool = False, batch_size: int = 256) -> dict[str, float]:
    """Empirical Lipschitz complexity of `fn` over the points `x`.

    Definition (the DAE paper's (B.1), appendix B.2): over pairs (a, b) of distinct inputs drawn
    uniformly from `x`, the ratio

        r(a, b) = ||fn(a) - fn(b)|| / ||a - b||

    of output to input distance. Its mean is the complexity figure the paper plots for encoder
    (x images, fn the encoder) and decoder (x latents of data, fn the decoder); since
    decoder(encoder(x)) ~ x, the two figures move in opposite directions and a faithful
    autoencoder has them multiply to about 1. A high quantile and the maximum are returned as
    well: the maximum is a lower bound of the true Lipschitz constant, exact for a linear map
    when some pair differs along its top right singular vector.

    Args:
        fn: (B, ...) -> (B, ...), applied under no_grad in batches.
        x: (N, ...) inputs, N >= 2; pairs of identical inputs are skipped.
        pairs: P, the number of pairs drawn (with replacement among the N (N - 1) pairs).
        quantile: the quantile of r reported as "quantile".
        generator: source of the pair draw (None: the global RNG).
        rms: measure distances as root-mean-square per element, ||v|| / sqrt(D), instead of
            Euclidean norms, so that inputs and outputs of different sizes (pixels and latents)
            are on one scale. For a map between spaces of equal size the two agree.
        batch_size: items per call of fn.

    Returns:
        {"mean", "quantile", "max"} of r over the pairs used, and "pairs", how many.
    """
    n = len(x)
    assert n >= 2, f"need at least 2 points, got {n}"
    assert 0.0 <= quantile <= 1.0, f"quantile must be in [0, 1], got {quantile}"
    y = _flat(_apply(fn, x, batch_size))  # (N, D_out)
    xf = _flat(x)  # (N, D_in)
    i = torch.randint(n, (pairs,), generator=generator)
    j = torch.randint(n - 1, (pairs,), generator=generator)
    j = j + (j >= i).long()  # uniform over the other n - 1 points: never a point with itself
    d_in = (xf[i] - xf[j]).norm(dim=1)
    d_out = (y[i] - y[j]).norm(dim=1)
    if rms:
        d_in, d_out = d_in / math.sqrt(xf.shape[1]), d_out / math.sqrt(y.shape[1])
    keep = d_in > 0
    if not keep.any():
        raise ValueError("lipschitz: every pair drawn has identical inputs")
    ratio = d_out[keep] / d_in[keep]
    return {"mean": float(ratio.mean()), "quantile": float(torch.quantile(ratio, quantile)),
            "max": float(ratio.max()), "pairs": int(keep.sum())}


def nearest_neighbour_accuracy(train_latents: torch.Tensor, train_labels: torch.Tensor,
                               test_latents: torch.Tensor, test_labels: torch.Tensor,
                               chunk: int = 1024) -> float:
    """Share of test items whose nearest training latent (Euclidean, flattened) has their class.

    Args:
        train_latents: (N, ...) latents with labels (N,).
        test_latents: (M, ...) latents of the same item shape with labels (M,).
    """
    assert train_latents.shape[1:] == test_latents.shape[1:], (
        f"latents differ in shape: {tuple(train_latents.shape)} vs {tuple(test_latents.shape)}")
    train, test = _flat(train_latents), _flat(test_latents)
    nearest = torch.cat([torch.cdist(part, train).argmin(1) for part in test.split(chunk)])
    return float((train_labels.cpu()[nearest] == test_labels.cpu()).double().mean())


def _unit_rows(latents: torch.Tensor) -> torch.Tensor:
    """(N, ...) -> (N, D) float64 rows scaled to unit length (zero rows stay zero)."""
    return F.normalize(_flat(latents), dim=1)


def cosine_histogram(latents: torch.Tensor, bins: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Histogram of the cosine similarity of every pair of distinct items (DAE paper, B.3).

    Mass near +-1 means many vectors point the same way (a redundant codebook or a collapsed
    latent); a spread-out histogram means the vectors fill their space.

    Args:
        latents: (N, ...) vectors, flattened per item (codebook entries, or whole latents).
        bins: equal-width bins over [-1, 1].

    Returns:
        counts (bins,) int64 over the N (N - 1) / 2 pairs, and edges (bins + 1,) float64.
    """
    u = _unit_rows(latents).cpu()
    i, j = torch.triu_indices(len(u), len(u), offset=1)
    cos = (u[i] * u[j]).sum(1).clamp(-1, 1)
    counts, edges = torch.histogram(cos, bins=bins, range=(-1.0, 1.0))
    return counts.long(), edges


def eigenvalue_decay(latents: torch.Tensor) -> torch.Tensor:
    """Normalised eigenvalues of the cosine-similarity matrix of the items, descending.

    The matrix G = U U^T (U the unit-length rows) has the same non-zero eigenvalues as U^T U,
    which is what is decomposed (min(N, D) of them). They are divided by their sum, so they
    form a spectrum that sums to 1: a fast decay means the vectors span few directions
    (dimensional collapse, DAE paper B.3), a flat one that they use all of them.

    Args:
        latents: (N, ...) vectors, flattened per item.

    Returns:
        (min(N, D),) float64, descending, summing to 1.
    """
    u = _unit_rows(latents)
    gram = u.T @ u if u.shape[1] <= u.shape[0] else u @ u.T
    values = torch.linalg.eigvalsh(gram).clamp_min(0).flip(0)
    return values / values.sum().clamp_min(torch.finfo(values.dtype).tiny)
