"""The network of a tokenizer's perceptual loss: the self-supervised network of its dataset
(`evaluation.ssl`), exported as a torch.export program of its ReLU feature maps.

The loss itself (`metrics.perceptual`, used by `recipes`) sits below this layer and cannot
train or cache a judge network, so it takes a .pt2 file: `resolve_perceptual` fills an empty
`loss.perceptual_net` of a run config with the file exported here, before the run is built.
The file is named by a hash of the network's weights, `<cache>/features/<fingerprint>/
ssl_perceptual-<hash>.pt2`, so a retrained network never passes for an older one and a run
resumes with the file it started with.

The network was trained without labels, on augmentations of the dataset's training images
(shifts of up to 1/8 of the side, small rotations and scalings, contrast, noise), so its
features change little under such shifts and much under blur and noise. Its `ssl` view of the
evaluation then judges a tokenizer trained with this loss by the network the loss used: the
pixel and classifier views are the held-out judges of such a run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
from pathlib import Path

import torch

from latentlab.errors import ConfigError, DataError
from latentlab.evaluation.features import cache_directory
from latentlab.evaluation.ssl import ssl_network
from latentlab.io import atomic_path
from latentlab.metrics.perceptual import relu_features
from latentlab.nn import hash_tensors

NAME = "ssl_perceptual"


def perceptual_network(spec: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The .pt2 file of dataset `spec`'s perceptual network (its self-supervised network's
    ReLU feature maps, eval mode, any batch size), exported on first use."""
    net = ssl_network(spec, cache_dir).eval()
    h = hashlib.sha256()
    hash_tensors(h, net.body.state_dict())
    path = cache_directory(spec, cache_dir)[2] / f"{NAME}-{h.hexdigest()[:12]}.pt2"
    if not path.exists():
        features = relu_features(net.body).eval()
        batch = torch.export.Dim("batch", min=1)
        example = torch.zeros(2, *net.shape)
        program = torch.export.export(features, (example,), dynamic_shapes=({0: batch},))
        buffer = io.BytesIO()  # torch.export wants a .pt2 name; the temporary file has none
        torch.export.save(program, buffer)
        with atomic_path(path) as tmp:
            tmp.write_bytes(buffer.getvalue())
    return path


def resolve_perceptual(cfg, cache_dir: str | os.PathLike | None = None):
    """A tokenizer run config (`recipes.train.TokenizerRunConfig`) with an empty
    `loss.perceptual_net` filled in with its dataset's perceptual network when the loss is on;
    otherwise `cfg` itself. ConfigError naming the field when the data has no such network
    (vectors, images under 8x8)."""
    if not cfg.loss.perceptual or cfg.loss.perceptual_net:
        return cfg
    try:
        path = perceptual_network(cfg.data.spec, cache_dir)
    except DataError as e:
        raise ConfigError(f"loss.perceptual: {e}") from None
    return dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss,
                                                             perceptual_net=str(path)))
