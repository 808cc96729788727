"""Prompt adherence: an attribute judge reads the objects in an image, and its reading of
generated images is scored against the structured scenes their prompts were written from.

The judge (`AttributeJudge`) is a small CNN with one head per cell of the 3x3 position grid:
is an object centred in this cell, and if so its shape, colour and size. Like the feature
networks (`evaluation.features`) it is trained once per dataset, on the training split's scenes
(`data.base.Scenes`), with a fixed seed and budget, and cached beside them as
`<cache>/features/<fingerprint>/attribute_judge.*` with its held-out accuracy per attribute.

Scoring (`score`) follows GenEval (Ghosh et al. 2023): the prompt's objects are matched to the
objects the judge reads (every assignment is tried; K <= 3), an attribute counts only where the
caption states it, a relation ("left of", ...) is checked geometrically on the grid cells of
the matched pair, and an image is all-correct when every stated attribute and relation is right
and the judge reads exactly as many objects as the prompt names.

Legend: B batch, N items, C channels, S image side, G grid cells, K prompt objects, P objects
read, A attributes per object, V values of one attribute.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from latentlab import pixels
from latentlab.data.base import LatentlabDataset, Scenes
from latentlab.errors import DataError
from latentlab.evaluation.adherence import POSITION, Scores, columns, score, summarise
from latentlab.evaluation.features import (
    JudgeTraining,
    cache_directory,
    load_cached,
    save_cached,
)
from latentlab.nn.blocks import group_norm

log = logging.getLogger("latentlab")
TAU = 0.05  # blur of a vote's position in cell units (training signal near a boundary)
NAME = "attribute_judge"  # attribute_judge.safetensors and .json in the feature cache


@dataclass
class AttributeJudgeConfig(JudgeTraining):
    epochs: float = 12.0
    """Passes over the training split, bounded by the two below."""
    min_steps: int = 300
    """At least this many steps."""
    max_steps: int = 800
    """At most this many steps (shapes 32x32, 4000 items: 750 steps, minutes on a CPU)."""
    batch_size: int = 64
    """Images per step."""
    seed: int = 2
    """Seed of the weights and batches (the classifier uses 0, the contrastive encoder 1)."""
    width: int = 16
    """Channels of the first stage (doubled per stage up to 4x)."""

    def __post_init__(self):
        super().__post_init__()
        for name in ("width",):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")


class AttributeJudge(nn.Module):
    """Reads the objects of images (B, C, S, S) in [-1, 1], S >= 8, cell by cell.

    Fully convolutional: conv3x3 -> GroupNorm -> SiLU with 2x2 average pooling after the first
    two (widths w, 2w, 4w, 4w; a receptive field of about 26 pixels, the largest shape of a
    32x32 image), then a 1x1 conv gives at each location l of the S/4 x S/4 map a vote for the
    centre of an object: a confidence logit h_l, the logits of every attribute but the
    position, and the vote's position: the brightness centroid of the window around l (as wide
    as the largest shape) plus a learned offset (zero at first; a triangle's centroid lies
    below the centre of its box). A cell's occupancy pools the votes falling in it,
    log-mean-exp over l of h_l + log(share of the vote inside the cell), the vote's position
    blurred by a logistic of scale `TAU` cells; its attributes are the votes' logits weighted
    the same way. The cell boundaries are thus fixed geometry, and a centre is located to a
    fraction of a pixel by the centroid rather than learned from cell labels alone: a
    network that had to learn the boundaries stayed near 93 % on positions.

    Attributes:
        names: attribute -> value names, as in `Scenes.names` (the position's values are the
            G cells, row-major on a square grid).
        read: the attributes read per cell (all but position and relation).
        accuracy: held-out accuracy per attribute, plus "count" (set by `train_attribute_judge`).
    """

    def __init__(self, shape: tuple[int, ...], names: dict[str, list[str]],
                 cfg: AttributeJudgeConfig):
        super().__init__()
        if len(shape) != 3 or min(shape[1:]) < 8:
            raise ValueError(f"the attribute judge takes images of at least 8x8, got "
                             f"{tuple(shape)}")
        cells = len(names.get(POSITION, []))
        if cells == 0 or math.isqrt(cells) ** 2 != cells:
            raise ValueError("the attribute judge needs a 'position' attribute on a square grid")
        self.shape, self.names, self.cfg = tuple(shape), dict(names), cfg
        self.accuracy: dict[str, float] = {}
        self.side = math.isqrt(cells)  # grid cells per row
        self.read = [a for a in columns(names) if a != POSITION]
        self.sizes = [len(names[a]) for a in self.read]
        w = cfg.width
        layers, cin = [], shape[0]
        for i, cout in enumerate((w, 2 * w, 4 * w, 4 * w)):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), group_norm(cout), nn.SiLU()]
            layers += [nn.AvgPool2d(2, ceil_mode=True)] if i < 2 else []
            cin = cout
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(cin, 3 + sum(self.sizes), 1)
        with torch.no_grad():  # votes start at the mass centroid of their window
            self.head.weight[1:3].zero_()
            self.head.bias[1:3].zero_()
        self.window = 2 * math.ceil(0.3 * max(shape[1:])) + 1  # the largest shape, pixels

    def votes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, C, S, S) -> vote logits (B, L), vote positions (B, L, 2) as (row, column) in
        cell units, attribute logits (B, L, sum V)."""
        maps = rearrange(self.head(self.body(x)), "b c h w -> b h w c")
        h, w = maps.shape[1:3]
        size = x.shape[-2:]
        rows = (torch.arange(size[0], device=x.device, dtype=x.dtype) + 0.5) / size[0]
        cols = (torch.arange(size[1], device=x.device, dtype=x.dtype) + 0.5) / size[1]
        grid = torch.stack(torch.meshgrid(rows, cols, indexing="ij"))  # (2, S, S) in [0, 1]
        # mass = brightness: shapes are drawn on black, and a shape's colour cancels out
        m = (x.amax(1, keepdim=True) - pixels.LOW).clamp(min=0) + 1e-6  # (B, 1, S, S)
        pool = dict(kernel_size=self.window, stride=4, padding=self.window // 2, ceil_mode=True)
        # the mass centroid of the window around each location (exact for circles, squares)
        centroid = F.avg_pool2d(m * grid, **pool) / F.avg_pool2d(m, **pool)  # (B, 2, h, w)
        centroid = rearrange(centroid[..., :h, :w], "b c h w -> b h w c")
        position = (centroid + maps[..., 1:3] / torch.tensor([h, w]).to(maps)) * self.side
        return (maps[..., 0].flatten(1), position.flatten(1, 2),
                maps[..., 3:].flatten(1, 2))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, C, S, S) -> occupancy logits (B, G) and per read attribute logits (B, G, V)."""
        assert tuple(x.shape[1:]) == self.shape, (
            f"AttributeJudge expects images of shape {self.shape}, got {tuple(x.shape[1:])}")
        logit, position, values = self.votes(x)
        # log share of each vote inside each row / column band: (B, L, side)
        bands = torch.arange(self.side, device=x.device, dtype=position.dtype)
        u = position[..., None] - bands  # (B, L, 2, side): 0..1 inside band j
        low = F.logsigmoid(u / TAU).clone()
        high = F.logsigmoid((1 - u) / TAU).clone()
        low[..., 0], high[..., -1] = 0.0, 0.0  # the outer bands reach the image edges
        inside = low + high
        share = inside[:, :, 0, :, None] + inside[:, :, 1, None, :]  # (B, L, side, side)
        weight = logit[..., None] + share.flatten(2)  # (B, L, G)
        occupied = weight.logsumexp(1) - math.log(weight.shape[1])
        pooled = torch.einsum("blg,blv->bgv", weight.softmax(1), values)
        return occupied, list(pooled.split(self.sizes, dim=-1))

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor, batch_size: int = 512
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Of many images, eval mode, fp32, on the CPU: occupancy probability (N, G) and the
        most likely value of each read attribute per cell (N, G, len(read))."""
        device = self.head.weight.device
        occupied, values = [], []
        for part in x.split(batch_size):
            o, logits = self(part.to(device).float())
            occupied.append(o.float().sigmoid().cpu())
            values.append(torch.stack([v.argmax(-1) for v in logits], -1).cpu())
        return torch.cat(occupied), torch.cat(values)


def cell_targets(scenes: Scenes) -> torch.Tensor:
    """(N, G, len(read)) int64: the read attributes of the object centred in each cell, -1 in
    empty cells (columns in `AttributeJudge.read` order)."""
    names = columns(scenes.names)
    pos = names.index(POSITION)
    read = [names.index(a) for a in names if a != POSITION]
    n, k, _ = scenes.objects.shape
    target = np.full((n, len(scenes.names[POSITION]), len(read)), -1, dtype=np.int64)
    for j in range(k):
        present = scenes.objects[:, j, pos] >= 0
        items = np.nonzero(present)[0]
        target[items, scenes.objects[items, j, pos]] = scenes.objects[items, j][:, read]
    return torch.from_numpy(target)


def judge_loss(judge: AttributeJudge, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Occupancy BCE over all cells plus each attribute's cross-entropy over occupied cells."""
    occupied, logits = judge(x)
    loss = F.binary_cross_entropy_with_logits(occupied, (target[..., 0] >= 0).float())
    for a, v in enumerate(logits):
        loss = loss + F.cross_entropy(v.flatten(0, 1), target[..., a].flatten(), ignore_index=-1)
    return loss


def _images(data: LatentlabDataset) -> torch.Tensor:
    return data.__getitems__(list(range(len(data)))).x.float()


def held_out_accuracy(judge: AttributeJudge, x: torch.Tensor, scenes: Scenes
                      ) -> dict[str, float]:
    """Accuracy per attribute on real images: each read attribute at the object's true cell;
    position: the objects whose cell is among the K most occupied cells of their image (for
    one object: the argmax); count: the share of images read with K objects."""
    occupied, values = judge.probabilities(x)
    target = cell_targets(scenes)
    present = target[..., 0] >= 0  # (N, G)
    k = present.sum(1)
    accuracy = {a: float((values[..., i] == target[..., i])[present].double().mean())
                for i, a in enumerate(judge.read)}
    rank = occupied.argsort(1, descending=True).argsort(1)  # (N, G) 0 = most occupied
    accuracy[POSITION] = float((rank < k[:, None])[present].double().mean())
    accuracy["count"] = float((occupied_cells(occupied).sum(1) == k).double().mean())
    return accuracy


def train_attribute_judge(train: LatentlabDataset, test: LatentlabDataset,
                          cfg: AttributeJudgeConfig | None = None) -> AttributeJudge:
    """Train an AttributeJudge on the images and scenes of `train`; accuracy on `test`.

    Deterministic: weights and batches come from `cfg.seed` (the global RNG is left as it was).
    fp32 on the CPU.

    Raises:
        ValueError: the data has no scenes, or images the judge cannot take.
    """
    cfg = cfg or AttributeJudgeConfig()
    if train.scenes is None or test.scenes is None:
        raise ValueError("the attribute judge needs data with structured scenes (captions)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        judge = AttributeJudge(train.shape, train.scenes.names, cfg)
    x, target = _images(train), cell_targets(train.scenes)
    g = torch.Generator().manual_seed(cfg.seed)

    def batch_loss() -> torch.Tensor:
        idx = cfg.batch(len(train), g)
        return judge_loss(judge, x[idx], target[idx])

    cfg.fit(judge, len(train), batch_loss)
    judge.accuracy = held_out_accuracy(judge, _images(test), test.scenes)
    return judge


def attribute_judge(spec: str, cache_dir: str | os.PathLike | None = None,
                    cfg: AttributeJudgeConfig | None = None) -> AttributeJudge:
    """The attribute judge of captioned dataset `spec`, trained on first use and cached (see
    `features.feature_network` for the cache).

    Returns:
        The judge in eval mode on the CPU, with `.accuracy` (held-out, per attribute) set.

    Raises:
        DataError: the dataset cannot be read, has no scenes, or images under 8x8.
    """
    cfg = cfg or AttributeJudgeConfig()
    train, test, directory = cache_directory(spec, cache_dir)
    found = load_cached(directory, NAME, cfg, lambda r: AttributeJudge(tuple(r["shape"]),
                                                                       dict(r["names"]), cfg))
    if found is not None:
        judge, record = found
        judge.accuracy = dict(record["accuracy"])
        return judge
    log.info("training the attribute judge of %s (cached in %s)", spec, directory)
    try:
        judge = train_attribute_judge(train, test, cfg)
    except ValueError as e:
        raise DataError(f"{spec}: no attribute judge: {e}") from None
    save_cached(directory, NAME, judge, {
        "accuracy": judge.accuracy, "dataset": spec, "fingerprint": directory.name,
        "shape": list(judge.shape), "config": dataclasses.asdict(cfg),
        "names": list(judge.names.items())})  # pairs: the JSON is written with sorted keys
    log.info("attribute judge of %s: held-out accuracy %s", spec,
             ", ".join(f"{a} {v:.4f}" for a, v in judge.accuracy.items()))
    return judge


def occupied_cells(occupied: torch.Tensor) -> torch.Tensor:
    """Which cells hold an object, from occupancy probabilities (N, G): the round(sum of the
    probabilities) most occupied cells of each image, so an object whose centre lies on a
    boundary, shared between two cells, is read once. (N, G) bool."""
    count = occupied.sum(1).round().long()  # (N,) objects per image
    rank = occupied.argsort(1, descending=True).argsort(1)  # (N, G) 0 = most occupied
    return rank < count[:, None]


def read_objects(judge: AttributeJudge, images: torch.Tensor) -> list[np.ndarray]:
    """The objects the judge reads in images (N, C, S, S) in [-1, 1]: per image (P, A) int64 in
    the column order of `Scenes.objects` (the position is the cell), one row per occupied
    cell (`occupied_cells`), in cell order."""
    occupied, values = judge.probabilities(images)
    names = columns(judge.names)
    order = [judge.read.index(a) if a != POSITION else -1 for a in names]
    found = []
    for cells, seen in zip(occupied_cells(occupied).numpy(), values.numpy(), strict=True):
        cell = np.nonzero(cells)[0]
        found.append(np.stack([cell if i < 0 else seen[cell, i] for i in order], 1))
    return found


def adherence(judge: AttributeJudge, images: torch.Tensor, scenes: Scenes,
              mask: np.ndarray | None = None) -> dict[str, float]:
    """How the judge's reading of images (N, C, S, S) in [-1, 1] agrees with the prompts'
    scenes (see `adherence.summarise` for the keys), over the items of `mask` (N,) bool."""
    return summarise(_scores(judge, images, scenes), mask)


def _scores(judge: AttributeJudge, images: torch.Tensor, scenes: Scenes) -> Scores:
    if columns(judge.names) != columns(scenes.names):
        raise DataError(f"the judge reads {columns(judge.names)}, the prompts state "
                        f"{columns(scenes.names)}")
    return score(read_objects(judge, images), scenes)


def as_images(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 pixels (N, C, S, S) or (N, S, S, C), or float (N, C, S, S) in [-1, 1] -> float
    (N, C, S, S) in [-1, 1]."""
    x = torch.as_tensor(images)
    assert x.ndim == 4, f"images must be (N, C, S, S), got {tuple(x.shape)}"
    if x.dtype != torch.uint8:
        return x.float()
    if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):  # the samples.npz layout
        x = rearrange(x, "n h w c -> n c h w")
    return pixels.from_uint8(x)


def prompt_adherence(images: np.ndarray | torch.Tensor, scenes: Scenes, spec: str,
                     device: torch.device | str = "cpu", mask: np.ndarray | None = None,
                     cache_dir: str | os.PathLike | None = None) -> dict[str, float]:
    """Prompt adherence of generated images to the scenes of their prompts, as judged by the
    attribute judge of dataset `spec` (trained on first use and cached).

    Args:
        images: N generated images, uint8 (N, C, S, S) or (N, S, S, C) as in samples.npz, or
            float (N, C, S, S) in [-1, 1].
        scenes: the N prompts' scenes (e.g. `dataset.scenes.subset(idx)`).
        spec: the dataset spec the generator was trained on.
        device: where the judge reads the images.
        mask: (N,) bool, the prompts of held-out combinations: adds the same keys prefixed
            "heldout/" over those items.
        cache_dir: root of the judge cache (see `features.feature_network`).

    Returns:
        "accuracy/<attribute>" for each attribute some prompt states, "accuracy/relation"
        where any prompt states one, "all_correct" with "all_correct/low" and
        "all_correct/high" (95 % Wilson interval), "n"; "judge/<attribute>", the judge's own
        held-out accuracy on real images.
    """
    judge = attribute_judge(spec, cache_dir).to(device)
    scores = _scores(judge, as_images(images), scenes)
    result = summarise(scores)
    if mask is not None:
        result |= {f"heldout/{k}": v for k, v in summarise(scores, mask).items()}
    return result | {f"judge/{k}": v for k, v in judge.accuracy.items()}
