"""The domain feature network: a small classifier trained on a dataset's own training split,
whose penultimate features serve the Fréchet distance, KID and precision/recall, and whose
predictions score class-conditional samples.

No pretrained network can be downloaded on these machines, and Inception features of 8x8 digits
would mean little anyway, so every dataset gets its own network, trained once with a fixed seed
and budget and cached under `<cache>/features/<fingerprint>/` beside a JSON record of its
held-out accuracy. Labelled data trains it on the classes; unlabelled images on a proxy task,
telling which of the four flips (none, horizontal, vertical, both) was applied, a
self-supervised task in the spirit of rotation prediction (Gidaris et al. 2018) that works for
any image shape.

Legend: B batch, C channels, H height, W width, D vector size, F feature width, K classes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from latentlab.data import load_dataset
from latentlab.data.base import LatentlabDataset
from latentlab.errors import DataError
from latentlab.io import atomic_path, write_json
from latentlab.nn.blocks import group_norm

log = logging.getLogger("latentlab")
NAME = "feature_net"  # feature_net.safetensors and feature_net.json in the cache
FLIPS = 4  # classes of the proxy task of unlabelled images


@dataclass
class JudgeTraining:
    """The fixed training budget of a judge network: Adam with cosine decay to zero."""

    epochs: float = 25.0
    """Passes over the training split, bounded by the two below."""
    min_steps: int = 300
    """At least this many steps (small datasets: digits 8x8 reaches ~99 % in 300)."""
    max_steps: int = 5000
    """At most this many steps (large datasets stay within minutes on a CPU)."""
    batch_size: int = 128
    """Items per step."""
    lr: float = 3e-3
    """Peak learning rate."""
    seed: int = 0
    """Seed of the initial weights and of the batch order."""

    def __post_init__(self):
        for name in ("min_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.max_steps < self.min_steps:
            raise ValueError(f"max_steps: must be >= min_steps ({self.min_steps}), "
                             f"got {self.max_steps}")

    def steps(self, n: int) -> int:
        """Optimizer steps for a training split of n items."""
        wanted = math.ceil(self.epochs * n / self.batch_size)
        return min(self.max_steps, max(self.min_steps, wanted))

    def optimizer(self, net: nn.Module, steps: int
                  ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        """Adam at `lr` and its cosine decay to zero over `steps`."""
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        return opt, torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))

    def batch(self, n: int, g: torch.Generator) -> torch.Tensor:
        """Indices of one batch drawn with replacement from n items."""
        return torch.randint(n, (min(self.batch_size, n),), generator=g)

    def fit(self, net: nn.Module, n: int, batch_loss: Callable[[], torch.Tensor]) -> None:
        """Train `net` for `steps(n)` steps on `batch_loss()` (which draws its own batch); the
        net is left in eval mode."""
        steps = self.steps(n)
        opt, sched = self.optimizer(net, steps)
        net.train()
        for _ in range(steps):
            loss = batch_loss()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        net.eval()


@dataclass
class FeatureNetConfig(JudgeTraining):
    width: int = 32
    """Channels of the first stage (doubled per stage up to 4x); hidden width of the MLP."""
    features: int = 128
    """F, the width of the penultimate layer whose activations are the features."""

    def __post_init__(self):
        super().__post_init__()
        for name in ("width", "features"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")


def conv_stages(side: int) -> int:
    """Number of halvings of a CNN on images whose smaller side is `side`: down to about 2x2,
    between 2 (8x8 digits) and 4 (32x32 and up)."""
    return min(4, max(2, math.ceil(math.log2(max(side, 2) / 2))))


class FeatureNet(nn.Module):
    """Small classifier: CNN for images (C, H, W) with H, W >= 8, MLP for vectors (D,).

    Images: per stage conv3x3 -> GroupNorm -> SiLU twice, then 2x2 average pooling (widths
    w, 2w, 4w, 4w); global average pooling, Linear -> SiLU gives the features (B, F); a Linear
    head gives the logits (B, K). Vectors: Linear -> SiLU -> Linear -> SiLU gives the features.

    Attributes:
        accuracy: held-out accuracy on the task it was trained for (set by `feature_network`).
        task: "classes" (the dataset's labels) or "flips" (the proxy task of unlabelled images).
    """

    def __init__(self, shape: tuple[int, ...], num_classes: int, cfg: FeatureNetConfig):
        super().__init__()
        self.shape, self.num_classes, self.cfg = tuple(shape), num_classes, cfg
        self.accuracy, self.task = float("nan"), "classes"
        w = cfg.width
        if len(shape) == 3:
            if min(shape[1:]) < 8:
                raise ValueError(f"FeatureNet takes images of at least 8x8, got {tuple(shape)}")
            layers, cin = [], shape[0]
            for i in range(conv_stages(min(shape[1:]))):
                cout = w * min(2**i, 4)
                layers += [nn.Conv2d(cin, cout, 3, padding=1), group_norm(cout), nn.SiLU(),
                           nn.Conv2d(cout, cout, 3, padding=1), group_norm(cout), nn.SiLU(),
                           nn.AvgPool2d(2, ceil_mode=True)]
                cin = cout
            self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                      nn.Linear(cin, cfg.features), nn.SiLU())
        elif len(shape) == 1:
            self.body = nn.Sequential(nn.Linear(shape[0], w * 4), nn.SiLU(),
                                      nn.Linear(w * 4, cfg.features), nn.SiLU())
        else:
            raise ValueError(f"FeatureNet takes (C, H, W) or (D,) items, got {tuple(shape)}")
        self.head = nn.Linear(cfg.features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) or (B, D) -> (B, F) penultimate activations."""
        assert tuple(x.shape[1:]) == self.shape, (
            f"FeatureNet expects items of shape {self.shape}, got {tuple(x.shape[1:])}")
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) or (B, D) -> (B, K) logits."""
        return self.head(self.features(x))

    @torch.no_grad()
    def embed(self, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Features of many items in fp32, without grad, batch by batch: (N, ...) -> (N, F)."""
        device = self.head.weight.device
        return torch.cat([self.features(part.to(device).float()).float().cpu()
                          for part in x.split(batch_size)])

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Predicted classes of many items: (N, ...) -> (N,) int64."""
        device = self.head.weight.device
        return torch.cat([self(part.to(device).float()).argmax(1).cpu()
                          for part in x.split(batch_size)])


def flip_task(x: torch.Tensor, generator: torch.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """The proxy task of unlabelled images: (B, C, H, W) -> (flipped images, (B,) flip index).

    Index bit 0 flips horizontally, bit 1 vertically; without a generator item i gets i mod 4
    (the fixed held-out version of the task).
    """
    n = len(x)
    target = (torch.randint(FLIPS, (n,), generator=generator) if generator is not None
              else torch.arange(n) % FLIPS)
    h, v = (target & 1).bool(), (target & 2).bool()
    x = torch.where(h[:, None, None, None], x.flip(-1), x)
    x = torch.where(v[:, None, None, None], x.flip(-2), x)
    return x, target


def _chunks(data: LatentlabDataset, size: int = 512):
    """The whole dataset in order, as Batches of up to `size` items (lazy datasets stay lazy)."""
    for start in range(0, len(data), size):
        yield data.__getitems__(list(range(start, min(start + size, len(data)))))


def _task(data: LatentlabDataset) -> str:
    if data.num_classes >= 2:
        return "classes"
    if data.is_image:
        return "flips"
    raise DataError(f"{data.name}: a feature network needs labels for vector data")


def train_feature_net(train: LatentlabDataset, test: LatentlabDataset,
                      cfg: FeatureNetConfig | None = None) -> FeatureNet:
    """Train a FeatureNet on `train` with the fixed budget of `cfg`; accuracy on `test`.

    Deterministic: the weights and the batch order come from `cfg.seed` (the global RNG is left
    as it was). Trains in fp32 on the CPU: the network is small enough that this takes seconds.
    """
    cfg = cfg or FeatureNetConfig()
    task = _task(train)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = FeatureNet(train.shape, train.num_classes if task == "classes" else FLIPS, cfg)
    g = torch.Generator().manual_seed(cfg.seed)

    def batch_loss() -> torch.Tensor:
        batch = train.__getitems__(cfg.batch(len(train), g).tolist())
        xb, yb = batch.x.float(), batch.y
        if task == "flips":
            xb, yb = flip_task(xb, g)
        return F.cross_entropy(net(xb), yb)

    cfg.fit(net, len(train), batch_loss)
    correct = 0
    for batch in _chunks(test):
        xt, yt = flip_task(batch.x.float()) if task == "flips" else (batch.x.float(), batch.y)
        correct += int((net.predict(xt) == yt).sum())
    net.accuracy, net.task = correct / len(test), task
    return net


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """`cache_dir`, else $LATENTLAB_CACHE, else ~/.cache/latentlab."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("LATENTLAB_CACHE") or Path.home() / ".cache" / "latentlab")


def dataset_fingerprint(train: LatentlabDataset, test: LatentlabDataset) -> str:
    """One key for both splits of a dataset."""
    key = f"{train.fingerprint()}|{test.fingerprint()}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _record(net: FeatureNet, spec: str, fp: str) -> dict:
    return {"accuracy": net.accuracy, "task": net.task, "dataset": spec, "fingerprint": fp,
            "shape": list(net.shape), "num_classes": net.num_classes,
            "config": dataclasses.asdict(net.cfg)}


def load_cached(directory: Path, name: str, cfg, build: Callable[[dict], nn.Module]
                ) -> tuple[nn.Module, dict] | None:
    """A network cached as `name`.safetensors + `name`.json in `directory`, if its record and
    weights are readable and it was made with config `cfg`; `build(record)` makes the empty
    network. None: missing, partly written by an older version, or corrupt (train again)."""
    try:
        record = json.loads((directory / f"{name}.json").read_text())
        if record["config"] != dataclasses.asdict(cfg):
            return None
        net = build(record)
        net.load_state_dict(load_file(directory / f"{name}.safetensors"))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, RuntimeError,
            SafetensorError):
        return None
    return net.eval(), record


def save_cached(directory: Path, name: str, net: nn.Module, record: dict) -> None:
    """Cache `net` and its JSON `record` (which must hold "config") for `load_cached`."""
    tensors = {k: v.detach().contiguous().clone() for k, v in net.state_dict().items()}
    with atomic_path(directory / f"{name}.safetensors") as tmp:
        save_file(tensors, tmp)
    write_json(directory / f"{name}.json", record)  # last: it marks the entry complete


def cache_directory(spec: str, cache_dir: str | os.PathLike | None = None
                    ) -> tuple[LatentlabDataset, LatentlabDataset, Path]:
    """Both splits of dataset `spec` and the cache folder of its networks."""
    train, test = load_dataset(spec, "train"), load_dataset(spec, "test")
    return train, test, cache_root(cache_dir) / "features" / dataset_fingerprint(train, test)


def feature_network(spec: str, cache_dir: str | os.PathLike | None = None,
                    cfg: FeatureNetConfig | None = None) -> FeatureNet:
    """The feature network of dataset `spec`, trained on its train split on first use.

    Args:
        spec: a dataset spec (see `latentlab.data.spec`).
        cache_dir: root of the cache (default: $LATENTLAB_CACHE or ~/.cache/latentlab); the net
            lives in `features/<fingerprint of both splits>/`.
        cfg: the network and its training budget; a cached net made with another is retrained.

    Returns:
        The net in eval mode on the CPU, with `.accuracy` (held-out) and `.task` set.

    Raises:
        DataError: the dataset cannot be read, or has items no feature network takes
            (images under 8x8, unlabelled vectors).
    """
    cfg = cfg or FeatureNetConfig()
    train, test, directory = cache_directory(spec, cache_dir)
    found = load_cached(directory, NAME, cfg, lambda r: FeatureNet(tuple(r["shape"]),
                                                                   r["num_classes"], cfg))
    if found is not None:
        net, record = found
        net.accuracy, net.task = float(record["accuracy"]), record["task"]
        return net
    log.info("training the feature network of %s (cached in %s)", spec, directory)
    try:
        net = train_feature_net(train, test, cfg)
    except ValueError as e:  # items the network cannot take, e.g. images under 8x8
        raise DataError(f"{spec}: no feature network: {e}") from None
    save_cached(directory, NAME, net, _record(net, spec, directory.name))
    log.info("feature network of %s: held-out %s accuracy %.4f", spec, net.task, net.accuracy)
    return net
