"""The self-supervised view: a contrastive encoder trained on a dataset's images without labels.

An independent judge beside the supervised classifier (`evaluation.features`): another
architecture (narrower, strided convolutions with BatchNorm and ReLU, no pooling, a linear
layer over the whole final map), another objective (SimCLR, Chen et al. 2020: two
augmentations of an image must find each other among the batch, NT-Xent loss), another seed.
Its features are the encoder's output before the projection head, as SimCLR recommends. Like
the classifier it is trained once per dataset and cached beside it,
`<cache>/features/<fingerprint>/ssl_net.*`.

The augmentations suit small images: a random affine map (rotation up to 10 degrees, scale
0.9-1.1, shift up to 1/8 of the side; no flips, which change what a digit is), contrast and
brightness jitter, and Gaussian noise.

Legend: B batch, C channels, H height, W width, F feature width, P projection width.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from latentlab.data.base import LatentlabDataset
from latentlab.errors import DataError
from latentlab.evaluation.features import (
    JudgeTraining,
    cache_directory,
    conv_stages,
    load_cached,
    save_cached,
)

log = logging.getLogger("latentlab")
NAME = "ssl_net"  # ssl_net.safetensors and ssl_net.json in the feature cache


@dataclass
class SSLConfig(JudgeTraining):
    epochs: float = 100.0
    """Passes over the training split, bounded by the two below."""
    max_steps: int = 1000
    """At most this many steps (32x32 datasets stay within minutes on a CPU)."""
    batch_size: int = 256
    """Images per step (each seen in two augmentations)."""
    lr: float = 2e-3
    """Peak learning rate."""
    seed: int = 1
    """Seed of the weights, batches and augmentations (the classifier uses 0)."""
    width: int = 16
    """Channels of the stem; each strided stage doubles them, up to 4x."""
    features: int = 64
    """F, the width of the encoder output whose activations are the features."""
    projection: int = 32
    """P, the width of the projection head the contrastive loss sees."""
    temperature: float = 0.2
    """Temperature of the NT-Xent loss."""

    def __post_init__(self):
        super().__post_init__()
        for name in ("width", "features", "projection"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")


class SSLNet(nn.Module):
    """Contrastive encoder of images (C, H, W), H, W >= 8.

    conv3x3 -> ReLU, then per stage a 3x3 stride-2 conv -> BatchNorm -> ReLU (down to about
    2x2), flatten, Linear to F features; a projection head Linear -> ReLU -> Linear to P.

    Attributes:
        retrieval: held-out share of test images whose other augmentation is their nearest
            neighbour among 2 x 256 augmented test images (set by `train_ssl_net`).
        knn_accuracy: held-out 1-nearest-neighbour class accuracy of test features against
            training features, for labelled data; NaN otherwise.
    """

    def __init__(self, shape: tuple[int, ...], cfg: SSLConfig):
        super().__init__()
        if len(shape) != 3 or min(shape[1:]) < 8:
            raise ValueError(f"the self-supervised view takes images of at least 8x8, got "
                             f"{tuple(shape)}")
        self.shape, self.cfg = tuple(shape), cfg
        self.retrieval = self.knn_accuracy = float("nan")
        layers, cin = [nn.Conv2d(shape[0], cfg.width, 3, padding=1), nn.ReLU()], cfg.width
        h, w = shape[1:]
        for i in range(conv_stages(min(h, w))):
            cout = cfg.width * min(2 ** (i + 1), 4)
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout),
                       nn.ReLU()]
            cin, h, w = cout, (h + 1) // 2, (w + 1) // 2
        self.body = nn.Sequential(*layers, nn.Flatten(), nn.Linear(cin * h * w, cfg.features))
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(cfg.features, cfg.features), nn.ReLU(),
                                  nn.Linear(cfg.features, cfg.projection))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, F) features."""
        assert tuple(x.shape[1:]) == self.shape, (
            f"SSLNet expects images of shape {self.shape}, got {tuple(x.shape[1:])}")
        return self.body(x)

    @torch.no_grad()
    def embed(self, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Features of many images in fp32, eval mode, batch by batch: (N, ...) -> (N, F)."""
        device = self.head[1].weight.device
        return torch.cat([self(part.to(device).float()).float().cpu()
                          for part in x.split(batch_size)])


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random augmentation of each image (B, C, H, W) in [-1, 1] (see the module docstring)."""
    b = len(x)

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=generator)

    angle, scale = uniform(-math.pi / 18, math.pi / 18), uniform(0.9, 1.1)
    shift = uniform(-0.25, 0.25), uniform(-0.25, 0.25)  # 1/8 of the side in [-1, 1] units
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[0]], 1),
                         torch.stack([sin, cos, shift[1]], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    x = x * uniform(0.7, 1.3)[:, None, None, None] + uniform(-0.2, 0.2)[:, None, None, None]
    return x + 0.1 * torch.randn(x.shape, generator=generator)


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent loss of paired projections a, b (B, P): row i of a must pick row i of b (and the
    reverse) among the other 2B - 1 rows."""
    z = F.normalize(torch.cat([a, b]), dim=1)  # (2B, P)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    n = len(a)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(sim, target)


def _all(data: LatentlabDataset) -> tuple[torch.Tensor, torch.Tensor]:
    batch = data.__getitems__(list(range(len(data))))
    return batch.x.float(), batch.y


@torch.no_grad()
def _scores(net: SSLNet, train: LatentlabDataset, test: LatentlabDataset, seed: int) -> None:
    """Set the held-out `retrieval` and, for labelled data, `knn_accuracy` of `net`."""
    g = torch.Generator().manual_seed(seed + 1)
    x_test, y_test = _all(test)
    part = x_test[:256]
    a, b = net.embed(augment(part, g)), net.embed(augment(part, g))
    nearest = torch.cdist(F.normalize(a, dim=1), F.normalize(b, dim=1)).argmin(1)
    net.retrieval = float((nearest == torch.arange(len(part))).double().mean())
    if train.num_classes >= 2:
        x_train, y_train = _all(train)
        idx = torch.cdist(net.embed(x_test), net.embed(x_train)).argmin(1)
        net.knn_accuracy = float((y_train[idx] == y_test).double().mean())


def train_ssl_net(train: LatentlabDataset, test: LatentlabDataset,
                  cfg: SSLConfig | None = None) -> SSLNet:
    """Train an SSLNet on the images of `train` (labels unused) with the fixed budget of `cfg`.

    Deterministic: weights, batches and augmentations follow `cfg.seed` (the global RNG is left
    as it was). fp32 on the CPU.
    """
    cfg = cfg or SSLConfig()
    if not train.is_image:
        raise ValueError("the self-supervised view takes images, not vectors")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = SSLNet(train.shape, cfg)
    g = torch.Generator().manual_seed(cfg.seed)

    def batch_loss() -> torch.Tensor:
        idx = torch.randperm(len(train), generator=g)[:cfg.batch_size]
        x = train.__getitems__(idx.tolist()).x.float()
        z = net.head(net(torch.cat([augment(x, g), augment(x, g)])))
        return nt_xent(*z.chunk(2), cfg.temperature)

    cfg.fit(net, len(train), batch_loss)
    _scores(net, train, test, cfg.seed)
    return net


def ssl_network(spec: str, cache_dir: str | os.PathLike | None = None,
                cfg: SSLConfig | None = None) -> SSLNet:
    """The self-supervised encoder of image dataset `spec`, trained on first use and cached.

    Raises:
        DataError: the dataset cannot be read, or holds vectors or images under 8x8.
    """
    cfg = cfg or SSLConfig()
    train, test, directory = cache_directory(spec, cache_dir)
    found = load_cached(directory, NAME, cfg, lambda r: SSLNet(tuple(r["shape"]), cfg))
    if found is not None:
        net, record = found
        net.retrieval = record["retrieval"]
        net.knn_accuracy = float("nan") if record["knn_accuracy"] is None else record[
            "knn_accuracy"]
        return net
    log.info("training the self-supervised network of %s (cached in %s)", spec, directory)
    try:
        net = train_ssl_net(train, test, cfg)
    except ValueError as e:
        raise DataError(f"{spec}: no self-supervised view: {e}") from None
    save_cached(directory, NAME, net, {
        "retrieval": net.retrieval, "dataset": spec,
        "knn_accuracy": None if math.isnan(net.knn_accuracy) else net.knn_accuracy,
        "fingerprint": directory.name, "shape": list(net.shape),
        "config": dataclasses.asdict(cfg)})
    log.info("self-supervised network of %s: held-out retrieval %.3f, 1-NN accuracy %.3f",
             spec, net.retrieval, net.knn_accuracy)
    return net
