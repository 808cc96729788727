"""Views: independent feature spaces in which samples are compared with real data.

One feature space can mislead: on the digits demo the classifier's features scored the coupled
recipe 0.72x the baseline's Fréchet distance while raw pixels scored it 1.37x. So every
generation figure is measured in several views and named after it (`fd_inf/pixels`):

- `pixels`: the raw pixels, flattened; for images of more than 64 values, their projection on
  the top 64 principal components of the training split;
- `classifier`: the penultimate features of the supervised domain classifier
  (`evaluation.features`); for unlabelled images, of the flip-prediction network;
- `probabilities`: that classifier's class probabilities (labelled data only);
- `ssl`: a self-supervised contrastive encoder with another architecture and seed
  (`evaluation.ssl`), images only;
- `inception`: a user-supplied Inception extractor (a torch.export `.pt2`), images only.

Vectors (the mixture toy) get `pixels` (their coordinates), `classifier` and `probabilities`.
`IMAGE_VIEWS` are the views every verdict of a study must agree in (for vectors, the first two).

Legend: N items, C channels, H height, W width, D values per item, F feature width.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from latentlab.evaluation.features import feature_network
from latentlab.metrics.generation import Embed, frechet_distance
from latentlab.nn.exported import load_program

PIXEL_COMPONENTS = 64  # the pixels view keeps at most this many dimensions
PCA_FIT_ITEMS = 10_000  # principal components are fitted on at most this many training items
# the views a study verdict must agree in (those of them a dataset has: vectors have no ssl)
IMAGE_VIEWS = ("pixels", "classifier", "ssl")
INCEPTION_SIZE = 299


class PixelView:
    """Flattened items, projected on the top principal components of `train` when they have
    more than `components` values (fitted in float64; deterministic up to each component's sign,
    to which distances are blind)."""

    def __init__(self, train: torch.Tensor, components: int = PIXEL_COMPONENTS):
        x = rearrange(train[:PCA_FIT_ITEMS].double(), "n ... -> n (...)")
        self.mean = self.basis = None
        if x.shape[1] > components:
            self.mean = x.mean(0)
            _, vectors = torch.linalg.eigh(torch.cov((x - self.mean).T))
            self.basis = vectors[:, -components:].flip(1)  # (D, components), largest first

    def __call__(self, items: torch.Tensor) -> torch.Tensor:
        x = rearrange(items.double(), "n ... -> n (...)")
        return x if self.basis is None else (x - self.mean) @ self.basis


def probabilities(net: nn.Module, items: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Softmax of a classifier's logits, batch by batch: (N, ...) -> (N, K)."""
    with torch.no_grad():
        return torch.cat([net(part.float()).softmax(1).double() for part in
                          items.split(batch_size)])


def load_extractor(path: str | os.PathLike) -> nn.Module:
    """A feature extractor saved with `torch.export.save` (a .pt2 file): `nn.exported`."""
    return load_program(path)


class InceptionView:
    """Features of a user-supplied extractor; nothing is downloaded.

    No Inception weights ship with latentlab. Export the pool3 extractor you trust (e.g. the
    Inception-v3 of pytorch-fid or torch-fidelity, its input normalisation inside) as a
    torch.export program with a dynamic batch dimension::

        batch = torch.export.Dim("batch")
        program = torch.export.export(model.eval(), (torch.rand(2, 3, 299, 299),),
                                      dynamic_shapes=({0: batch},))
        torch.export.save(program, "inception.pt2")

    It must map (B, 3, 299, 299) float32 images in [0, 1] to (B, F) features. Images here are
    resized bilinearly to 299x299 and grey images repeated to three channels.
    """

    def __init__(self, path: str | os.PathLike, batch_size: int = 64):
        self.extractor, self.batch_size = load_extractor(path), batch_size

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in [-1, 1], C in {1, 3} -> (N, F) float64."""
        parts = []
        for x in images.split(self.batch_size):
            x = (x.float().clamp(-1, 1) + 1) / 2  # the extractor's [0, 1] convention
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear",
                              align_corners=False)
            parts.append(self.extractor(x).flatten(1).double())
        return torch.cat(parts)


def inception_fid(real: torch.Tensor, fake: torch.Tensor, weights_path: str | os.PathLike
                  ) -> float:
    """Fréchet distance of images real (N, C, H, W) and fake (M, C, H, W) in [-1, 1] in the
    features of the extractor saved at `weights_path` (see `InceptionView`)."""
    embed = InceptionView(weights_path)
    return frechet_distance(embed(real), embed(fake))


def dataset_views(spec: str, train_items: torch.Tensor, cache_dir: str | os.PathLike | None
                  = None, inception: str | os.PathLike | None = None
                  ) -> tuple[dict[str, Embed], dict[str, float]]:
    """Every view of dataset `spec` (see the module docstring) and the held-out quality of its
    trained judges.

    Args:
        spec: a dataset spec; its networks are trained on first use and cached.
        train_items: (N, ...) items of its training split (the pixels view's PCA).
        cache_dir: the network cache (default: $LATENTLAB_CACHE or ~/.cache/latentlab).
        inception: a .pt2 extractor, for an `inception` view of images.

    Returns:
        ({view name: embedding function (N, ...) -> (N, F)}, judges) with judges
        feature_net_accuracy and, for images, ssl_retrieval and ssl_knn_accuracy.
    """
    from latentlab.evaluation.ssl import ssl_network  # only images need it

    net = feature_network(spec, cache_dir)
    views: dict[str, Embed] = {"pixels": PixelView(train_items), "classifier": net.embed}
    if net.task == "classes":
        views["probabilities"] = lambda x: probabilities(net, x)
    judges = {"feature_net_accuracy": net.accuracy}
    if train_items.ndim == 4:
        ssl = ssl_network(spec, cache_dir)
        views["ssl"] = ssl.embed
        judges |= {"ssl_retrieval": ssl.retrieval, "ssl_knn_accuracy": ssl.knn_accuracy}
        if inception is not None:
            views["inception"] = InceptionView(inception)
    return views, judges
