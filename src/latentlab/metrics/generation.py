"""Sample-quality metrics between two feature sets (the features come from a view,
`evaluation.views`).

- Fréchet distance (Heusel et al. 2017): the distance between Gaussians fitted to two feature
  sets, ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2).
- FD-infinity (Chong & Forsyth 2020, "Effectively Unbiased FID and Inception Score"): the
  Fréchet distance is biased upwards by about c / n at set size n; measured on random subsets of
  both sets at several fractions of their size and extrapolated linearly in 1 / n to n = inf.
- KID (Bińkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel, averaged over
  random subsets (torchmetrics' kernel).
- precision / recall (Kynkäänniemi et al. 2019): each set's manifold is the union of balls
  around its points with radius the distance to the k-th nearest neighbour within the set;
  precision is the share of generated points inside the real manifold, recall the share of real
  points inside the generated one.
- density / coverage (Naeem et al. 2020): with the real set's k-NN balls only, density counts
  how many real balls each generated point falls in (divided by k: about 1 when the two
  distributions match), coverage is the share of real balls that hold a generated point; both
  are less sensitive to outliers than precision and recall.
- class accuracy: the share of class-conditional samples the domain classifier assigns to the
  class they were drawn for.

Legend: N, M set sizes, F feature width, B batch, C channels, H height, W width.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

PR_K = 3  # neighbours of the precision/recall manifolds (Kynkäänniemi et al. use k = 3)
DC_K = 5  # neighbours of the density/coverage balls (Naeem et al. recommend k = 5)
# subset fractions and draws per fraction of the FD-infinity fit: fractions from 0.3 keep every
# subset well above the feature width of the views here (F <= 128 against >= 300 items)
FD_INF_FRACTIONS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
FD_INF_DRAWS = 4
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000
# direct differences, not the |a|^2 + |b|^2 - 2ab expansion: a point's distance to itself is
# exactly 0, so duplicate points and a set scored against itself behave exactly
EXACT = "donot_use_mm_for_euclid_dist"


def _check_features(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.ndim == 2 and b.ndim == 2 and a.shape[1] == b.shape[1], (
        f"features must be (N, F) and (M, F), got {tuple(a.shape)} and {tuple(b.shape)}")


def _sqrt_psd(s: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix via its eigendecomposition."""
    w, v = torch.linalg.eigh(s)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (a (N, F), b (M, F)).

    In float64. The trace of (S_a S_b)^1/2 is computed as that of the symmetric PSD matrix
    S_a^1/2 S_b S_a^1/2 (same eigenvalues), whose square root `eigh` gives exactly; the product
    S_a S_b itself is not symmetric and its general eigenvalues pick up spurious imaginary parts.
    """
    _check_features(a, b)
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    root = _sqrt_psd(s_a)
    cross = torch.linalg.eigvalsh(root @ s_b @ root).clamp_min(0).sqrt().sum()
    d = (mu_a - mu_b).square().sum() + s_a.trace() + s_b.trace() - 2 * cross
    return max(float(d), 0.0)  # rounding can leave -1e-12 for identical sets


def fd_infinity(a: torch.Tensor, b: torch.Tensor, fractions: tuple[float, ...] = FD_INF_FRACTIONS,
                draws: int = FD_INF_DRAWS, seed: int = 0) -> float:
    """Bias-corrected Fréchet distance FD-inf of feature sets a (N, F) and b (M, F).

    For each fraction f, `draws` pairs of random subsets (without replacement) of round(f N)
    items of a and round(f M) of b give FD(f); the least-squares line FD(f) = FD_inf + c / f is
    evaluated at 1 / f = 0. Both sets are subsampled, so the bias of a small reference set is
    removed too (Chong & Forsyth fix the reference statistics, having 50 000 of them). The
    estimate is unbiased, not non-negative: a value below 0 means "indistinguishable at this
    size", and its spread is shown by the real-vs-real floor.
    """
    _check_features(a, b)
    g = torch.Generator().manual_seed(seed)
    x, y = [], []
    for f in fractions:
        n, m = max(2, round(f * len(a))), max(2, round(f * len(b)))
        for _ in range(draws if f < 1 else 1):  # f = 1: the whole sets, one value
            sub_a = a[torch.randperm(len(a), generator=g)[:n]]
            sub_b = b[torch.randperm(len(b), generator=g)[:m]]
            x.append(1 / f)
            y.append(frechet_distance(sub_a, sub_b))
    design = torch.stack([torch.ones(len(x)), torch.tensor(x)], 1).double()
    coef = torch.linalg.lstsq(design, torch.tensor(y, dtype=torch.float64)[:, None]).solution
    return float(coef[0, 0])


def kernel_inception_distance(a: torch.Tensor, b: torch.Tensor, subsets: int = KID_SUBSETS,
                              subset_size: int = KID_SUBSET_SIZE, seed: int = 0
                              ) -> tuple[float, float]:
    """KID between feature sets a (N, F) and b (M, F): mean and std over random subsets.

    Each subset draws min(subset_size, N, M) items of each set without replacement (seeded);
    the kernel is k(x, y) = (x.y / F + 1)^3 and the estimate the unbiased MMD^2.
    """
    from torchmetrics.image.kid import poly_kernel  # lazy: torchmetrics is slow to import

    _check_features(a, b)
    a, b = a.double(), b.double()
    m = min(subset_size, len(a), len(b))
    assert m >= 2, f"KID needs at least 2 items per set, got {len(a)} and {len(b)}"
    g = torch.Generator().manual_seed(seed)
    in_a, in_b = torch.zeros(subsets, len(a), dtype=a.dtype), torch.zeros(subsets, len(b),
                                                                          dtype=a.dtype)
    for s in range(subsets):  # (S, N) and (S, M) indicators of each subset's items
        in_a[s, torch.randperm(len(a), generator=g)[:m]] = 1
        in_b[s, torch.randperm(len(b), generator=g)[:m]] = 1

    def subset_sums(x_in, k, y_in):  # (S,): sum of k over the pairs of each subset
        return ((x_in @ k) * y_in).sum(1)

    # every pair's kernel once; a subset's sums are then indicator products (the same values
    # as torchmetrics' poly_mmd on each subset, without recomputing 100 kernels)
    k_aa, k_bb, k_ab = poly_kernel(a, a), poly_kernel(b, b), poly_kernel(a, b)
    within = (subset_sums(in_a, k_aa, in_a) - in_a @ k_aa.diagonal()
              + subset_sums(in_b, k_bb, in_b) - in_b @ k_bb.diagonal())
    values = within / (m * (m - 1)) - 2 * subset_sums(in_a, k_ab, in_b) / m**2
    return float(values.mean()), float(values.std()) if subsets > 1 else 0.0


def _kth_neighbour_radius(x: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """(N, F) -> (N,) distance of each point to its k-th nearest other point."""
    assert len(x) > k, f"need more than k={k} points, got {len(x)}"
    # k + 1 smallest distances include the point itself at 0
    return torch.cat([
        torch.cdist(part, x, compute_mode=EXACT).topk(k + 1, largest=False).values[:, -1]
        for part in x.split(chunk)])


def _inside(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor,
            chunk: int = 1024) -> torch.Tensor:
    """(N,) bool: is each point within radius of some centre?"""
    return torch.cat([(torch.cdist(part, centres, compute_mode=EXACT) <= radii[None]).any(1)
                      for part in points.split(chunk)])


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = PR_K
                     ) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of feature sets real (N, F) and
    fake (M, F), with k-th-nearest-neighbour balls as the manifolds (float64 distances)."""
    _check_features(real, fake)
    real, fake = real.double(), fake.double()
    precision = _inside(fake, real, _kth_neighbour_radius(real, k)).double().mean()
    recall = _inside(real, fake, _kth_neighbour_radius(fake, k)).double().mean()
    return float(precision), float(recall)


def density_coverage(real: torch.Tensor, fake: torch.Tensor, k: int = DC_K
                     ) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020) of fake (M, F) against real (N, F).

    density = (1 / (k M)) sum_j #{i : fake_j in B(real_i, r_i)},
    coverage = (1 / N) #{i : some fake_j in B(real_i, r_i)}, r_i the distance of real_i to its
    k-th nearest real neighbour (float64 distances).
    """
    _check_features(real, fake)
    real, fake = real.double(), fake.double()
    radii = _kth_neighbour_radius(real, k)
    inside = torch.cat([torch.cdist(part, real, compute_mode=EXACT) <= radii[None]
                        for part in fake.split(1024)])  # (M, N)
    return float(inside.sum() / (k * len(fake))), float(inside.any(0).double().mean())


class Classifier(Protocol):
    """What class accuracy needs of a judge (the domain classifier,
    `evaluation.features.FeatureNet`)."""

    task: str
    """"classes" when it predicts the dataset's classes."""

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Items (N, ...) -> predicted classes (N,) int64."""
        ...


def class_accuracy(net: Classifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of items (N, ...) the classifier assigns to their label (N,)."""
    assert len(images) == len(labels), f"{len(images)} items but {len(labels)} labels"
    return float((net.predict(images) == labels.cpu()).double().mean())


Embed = Callable[[torch.Tensor], torch.Tensor]  # items (N, ...) -> features (N, F)


def view_metrics(real: torch.Tensor, fake: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """Every distribution metric of one view, from real (N, F) and fake (M, F) features.

    fd: raw Fréchet distance at equal sizes, n = min(M, N // 2) samples against one half A of
    the real set; fd_floor: the same for the other real half B against A, what a perfect
    generator would read at that size; fd_inf and fd_inf_floor: FD-infinity of all samples
    against all real items, and of B against A (about 0: its spread is the noise of fd_inf);
    kid, kid_std; precision, recall (k = 3); density, coverage (k = 5).
    """
    g = torch.Generator().manual_seed(seed)
    half = len(real) // 2
    order = torch.randperm(len(real), generator=g)
    a, b = real[order[:half]], real[order[half:2 * half]]
    n = min(len(fake), half)
    kid, kid_std = kernel_inception_distance(real, fake, seed=seed)
    precision, recall = precision_recall(real, fake)
    density, coverage = density_coverage(real, fake)
    return {"fd": frechet_distance(fake[torch.randperm(len(fake), generator=g)[:n]], a[:n]),
            "fd_floor": frechet_distance(b[:n], a[:n]),
            "fd_inf": fd_infinity(real, fake, seed=seed),
            "fd_inf_floor": fd_infinity(a, b, seed=seed),
            "kid": kid, "kid_std": kid_std, "precision": precision, "recall": recall,
            "density": density, "coverage": coverage}


def generation_metrics(views: dict[str, Embed], real_items: torch.Tensor,
                       fake_items: torch.Tensor, fake_labels: torch.Tensor | None = None,
                       judge: Classifier | None = None, seed: int = 0) -> dict[str, float]:
    """`view_metrics` in every view, as 'NAME/VIEW' (fd/pixels, fd_inf/ssl, ...), and the
    class_accuracy of labelled samples when `judge` is a classifier of the classes.

    Args:
        views: {view name: embedding function} (see `evaluation.views`).
        real_items: (N, C, H, W) in [-1, 1] (or (N, D) vectors), the reference set.
        fake_items: (M, ...) samples of the same shape.
        fake_labels: (M,) classes the samples were drawn for; None (or all -1) for
            unconditional samples.
        judge: the domain classifier that scores class accuracy.
        seed: the random halves, subsets and KID draws.
    """
    out = {}
    for name, embed in views.items():
        found = view_metrics(embed(real_items).double(), embed(fake_items).double(), seed)
        out |= {f"{key}/{name}": value for key, value in found.items()}
    if (fake_labels is not None and bool((fake_labels >= 0).all()) and judge is not None
            and judge.task == "classes"):
        out["class_accuracy"] = class_accuracy(judge, fake_items, fake_labels)
    return out
