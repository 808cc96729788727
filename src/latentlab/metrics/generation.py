"""Sample-quality metrics in the feature space of a domain network (`metrics.features`).

- Fréchet distance (Heusel et al. 2017): the distance between Gaussians fitted to two feature
  sets, ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2).
- KID (Bińkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel, averaged over
  random subsets (torchmetrics' kernel).
- precision / recall (Kynkäänniemi et al. 2019): each set's manifold is the union of balls
  around its points with radius the distance to the k-th nearest neighbour within the set;
  precision is the share of generated points inside the real manifold, recall the share of real
  points inside the generated one.
- class accuracy: the share of class-conditional samples the domain classifier assigns to the
  class they were drawn for.

Legend: N, M set sizes, F feature width, B batch, C channels, H height, W width.
"""

from __future__ import annotations

import logging
import os
import zipfile

import torch
import torch.nn.functional as F
from torch import nn

from latentlab.metrics.features import FeatureNet

PR_K = 3  # neighbours of the precision/recall manifolds (Kynkäänniemi et al. use k = 3)
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


def kernel_inception_distance(a: torch.Tensor, b: torch.Tensor, subsets: int = KID_SUBSETS,
                              subset_size: int = KID_SUBSET_SIZE, seed: int = 0
                              ) -> tuple[float, float]:
    """KID between feature sets a (N, F) and b (M, F): mean and std over random subsets.

    Each subset draws min(subset_size, N, M) items of each set without replacement (seeded);
    the kernel is k(x, y) = (x.y / F + 1)^3 and the estimate the unbiased MMD^2.
    """
    from torchmetrics.image.kid import poly_mmd  # lazy: torchmetrics is slow to import

    _check_features(a, b)
    a, b = a.double(), b.double()
    m = min(subset_size, len(a), len(b))
    assert m >= 2, f"KID needs at least 2 items per set, got {len(a)} and {len(b)}"
    g = torch.Generator().manual_seed(seed)
    values = torch.stack([poly_mmd(a[torch.randperm(len(a), generator=g)[:m]],
                                   b[torch.randperm(len(b), generator=g)[:m]])
                          for _ in range(subsets)])
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


def class_accuracy(net: FeatureNet, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of items (N, ...) the classifier assigns to their label (N,)."""
    assert len(images) == len(labels), f"{len(images)} items but {len(labels)} labels"
    return float((net.predict(images) == labels.cpu()).double().mean())


def generation_metrics(net: FeatureNet, real_images: torch.Tensor, fake_images: torch.Tensor,
                       fake_labels: torch.Tensor | None = None) -> dict[str, float]:
    """fd, kid (and kid_std), precision, recall and, with labels, class_accuracy.

    Args:
        net: the domain feature network of the dataset.
        real_images: (N, C, H, W) in [-1, 1] (or (N, D) vectors), usually the test split.
        fake_images: (M, ...) samples of the same shape.
        fake_labels: (M,) classes the samples were drawn for; None (or all -1) for
            unconditional samples.
    """
    real, fake = net.embed(real_images), net.embed(fake_images)
    kid, kid_std = kernel_inception_distance(real, fake)
    precision, recall = precision_recall(real, fake)
    out = {"fd": frechet_distance(real, fake), "kid": kid, "kid_std": kid_std,
           "precision": precision, "recall": recall}
    if fake_labels is not None and bool((fake_labels >= 0).all()) and net.task == "classes":
        out["class_accuracy"] = class_accuracy(net, fake_images, fake_labels)
    return out


INCEPTION_SIZE = 299


def load_extractor(path: str | os.PathLike) -> nn.Module:
    """A feature extractor saved with `torch.export.save` (a .pt2 file), in eval mode.

    torch.export's format rebuilds the graph from its own schema (no pickled code is run), and
    it supersedes TorchScript, which torch 2.13 deprecates.
    """
    if not zipfile.is_zipfile(path):  # a .pt2 program is a zip archive
        raise ValueError(f"{path}: not a torch.export program (not a .pt2 archive)")
    quiet = logging.getLogger("torch.export")  # it logs a traceback before raising
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        program = torch.export.load(str(path))
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise ValueError(f"{path}: not a torch.export program ({type(e).__name__}: {e})"
                         ) from None
    finally:
        quiet.setLevel(level)
    return program.module()


@torch.no_grad()
def inception_fid(real: torch.Tensor, fake: torch.Tensor, weights_path: str | os.PathLike,
                  batch_size: int = 64) -> float:
    """FID with a feature extractor the user supplies; nothing is downloaded.

    No Inception weights ship with latentlab. Export the pool3 extractor you trust (e.g. the
    Inception-v3 of pytorch-fid or torch-fidelity, its input normalisation inside) as a
    torch.export program with a dynamic batch dimension::

        batch = torch.export.Dim("batch")
        program = torch.export.export(model.eval(), (torch.rand(2, 3, 299, 299),),
                                      dynamic_shapes=({0: batch},))
        torch.export.save(program, "inception.pt2")

    It must map (B, 3, 299, 299) float32 images in [0, 1] to (B, F) features. Images here are
    resized bilinearly to 299x299 and grey images repeated to three channels.

    Args:
        real, fake: (N, C, H, W) images in [-1, 1], C in {1, 3}.
        weights_path: the .pt2 file.
    """
    extractor = load_extractor(weights_path)

    def embed(images: torch.Tensor) -> torch.Tensor:
        parts = []
        for x in images.split(batch_size):
            x = (x.float().clamp(-1, 1) + 1) / 2  # the extractor's [0, 1] convention
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear",
                              align_corners=False)
            parts.append(extractor(x).flatten(1).double())
        return torch.cat(parts)

    return frechet_distance(embed(real), embed(fake))
