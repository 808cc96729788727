"""A perceptual distance in the manner of LPIPS (Zhang et al. 2018), over the feature maps of a
network of latentlab's own, with no downloaded weights.

For images x and y, a frozen feature network gives feature maps f_l(x), f_l(y) at several
layers l. Each is normalised over its channels at every position (unit L2 norm, as LPIPS
does: what counts is the direction of the feature vector, not the scale of a layer), and

    d(x, y) = 1/L sum_l mean_{h, w} || f_l(x)_{hw} / |f_l(x)_{hw}| - f_l(y)_{hw} / |...| ||^2

so each layer adds a value in [0, 4] and the layers weigh the same. LPIPS also learns a
weight per channel from human judgements of similarity; latentlab has no such judgements, so
the channels weigh the same too: this is LPIPS's "baseline" form over another network, not
LPIPS, and its values are not comparable with LPIPS's.

Measured with the self-supervised networks of digits and shapes32 (`tests/test_perceptual.py`):
zero for identical images, growing with noise, and a one-pixel shift weighed against a 3x3 blur
at about 0.6 of the ratio pixel MSE gives them (digits: 1.9x against 3.3x; shapes32: 2.0x
against 3.3x). It still ranks the shift as the farther of the two, unlike LPIPS over VGG on
large natural images: these networks are a few layers deep on 8x8 to 32x32 images, where a
pixel is 1/8 to 1/32 of the side, and their shallow full-resolution maps weigh as much as the
deep, nearly shift-invariant ones.

The network is a torch.export program (`nn.exported`) returning a tuple of feature maps
(B, C_l, H_l, W_l); `evaluation.perceptual` exports the self-supervised network of a dataset
(`evaluation.ssl`) that way. Under autocast the network runs in the autocast dtype; the
normalisation and the distances are fp32.

Legend: B batch, C channels, H height, W width, L layers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

EPS = 1e-10  # LPIPS's: a zero feature vector normalises to zero, not NaN


def perceptual_distance(features: Callable[[torch.Tensor], Sequence[torch.Tensor]],
                        x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) images x, y -> (B,) distances (see the module docstring); gradients flow
    to both."""
    assert x.shape == y.shape, f"x and y must have one shape, got {x.shape} and {y.shape}"
    per_layer = []
    for both in features(torch.cat([x, y])):  # one pass over both: (2B, C_l, H_l, W_l)
        unit = both.float() / (both.float().square().sum(1, keepdim=True) + EPS).sqrt()
        fx, fy = unit.chunk(2)
        per_layer.append((fx - fy).square().sum(1).flatten(1).mean(1))  # (B,)
    return torch.stack(per_layer).mean(0)


class FrozenFeatures:
    """A feature network used as a fixed function: its weights take no gradient, it follows
    the inputs' device, and it is kept out of the module tree of whoever holds it (so out of
    their state dict, checkpoints and DDP), being rebuilt from its file instead."""

    def __init__(self, network: nn.Module):
        self.network, self.device = network, torch.device("cpu")  # loaded on the CPU
        for p in network.parameters():
            p.requires_grad_(False)

    def __call__(self, x: torch.Tensor) -> Sequence[torch.Tensor]:
        if x.device != self.device:
            self.network.to(x.device)
            self.device = x.device
        return self.network(x)

    def __deepcopy__(self, memo: dict) -> FrozenFeatures:
        return self  # frozen: a copy of its holder (an EMA, a DDP wrapper) may share it

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """`perceptual_distance` through this network: (B,)."""
        return perceptual_distance(self, x, y)


def relu_features(body: nn.Sequential) -> nn.Module:
    """A module returning the output of every ReLU of `body` (a conv stack up to its first
    non-convolutional layer) as a tuple: the layers a perceptual distance compares."""
    return _ReluFeatures(body)


class _ReluFeatures(nn.Module):
    def __init__(self, body: nn.Sequential):
        super().__init__()
        layers = []
        for m in body:
            if not isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.GroupNorm, nn.ReLU, nn.SiLU)):
                break
            layers.append(m)
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = []
        for m in self.layers:
            x = m(x)
            if isinstance(m, nn.ReLU):
                out.append(x)
        return tuple(out)

