"""Evaluate a trained tokenizer run: reconstruction, reconstruction Fréchet distance, and the
organisation of its latent (Lipschitz complexity, nearest-neighbour accuracy, predictability,
codebook usage, cosine histogram, eigenvalue decay). Definitions in docs/metrics.md.

Legend: N items, C channels, H height, W width, L latent channels, S latent spatial dims.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from latentlab import config as C
from latentlab.data import load_dataset
from latentlab.data.base import LatentlabDataset
from latentlab.errors import UserError
from latentlab.evaluation.features import FeatureNet, feature_network
from latentlab.evaluation.probe import PROBE_STEPS, UNITS, predictability
from latentlab.evaluation.views import dataset_views, inception_fid
from latentlab.generation.encode import load_tokenizer
from latentlab.metrics.generation import Embed, frechet_distance
from latentlab.metrics.latent import (
    cosine_histogram,
    eigenvalue_decay,
    lipschitz,
    nearest_neighbour_accuracy,
)
from latentlab.recipes.baseline import evaluate_tokenizer
from latentlab.recipes.train import TokenizerRunConfig
from latentlab.tokenizers.diffusers_ae import is_diffusers_folder
from latentlab.tokenizers.tokenizer import Tokenizer
from latentlab.training.rundir import CONFIG

MAX_TRAIN_ITEMS = 10_000
"""Training items encoded for 1-NN accuracy and the probe (a seeded random subset if more)."""
LIPSCHITZ_PAIRS, QUANTILE = 2000, 0.95
COSINE_BINS, MAX_COSINE_ITEMS = 40, 2000


@dataclass(frozen=True)
class Encoded:
    """A split encoded once: images (N, C, H, W) or vectors, labels (N,), normalised latents
    (N, L, *S), and token indices (N, *S) for discrete tokenizers."""

    x: torch.Tensor
    y: torch.Tensor
    z: torch.Tensor
    indices: torch.Tensor | None


@torch.no_grad()
def encode_items(tokenizer: Tokenizer, data: LatentlabDataset, items: list[int],
                 batch_size: int = 256) -> Encoded:
    """Encode data[items] (eval mode) into normalised latents (and indices)."""
    device = tokenizer.latent_shift.device
    xs, ys, zs, ids = [], [], [], []
    for start in range(0, len(items), batch_size):
        batch = data.__getitems__(items[start:start + batch_size])
        out = tokenizer.encode(batch.x.to(device))
        xs.append(batch.x)
        ys.append(batch.y)
        zs.append(tokenizer.normalize(out.latent).float().cpu())
        if out.indices is not None:
            ids.append(out.indices.cpu())
    return Encoded(torch.cat(xs), torch.cat(ys), torch.cat(zs), torch.cat(ids) if ids else None)


def subset(n: int, limit: int, seed: int) -> list[int]:
    """All of range(n), or a seeded random `limit` of it in increasing order."""
    if n <= limit:
        return list(range(n))
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=g)[:limit].tolist())


def load_run(run: str | Path, spec: str | None = None) -> tuple[str, Tokenizer]:
    """The dataset and the trained tokenizer of a run directory, or a diffusers autoencoder
    folder and the dataset `spec` it is evaluated on (one-line errors)."""
    run = Path(run)
    if is_diffusers_folder(run):
        if not spec:
            raise UserError(f"{run}: a diffusers folder has no dataset of its own; name the one "
                            "to evaluate it on with --data")
        return spec, load_tokenizer(run, spec)
    if spec:
        raise UserError("--data: only for a diffusers folder; a run is evaluated on its own "
                        "dataset")
    if not (run / CONFIG).exists():
        raise UserError(f"{run}: not a tokenizer run (no {CONFIG})")
    return C.load(TokenizerRunConfig, run / CONFIG).data.spec, Tokenizer.load(run)


def _lipschitz_figures(name: str, fn, points: torch.Tensor, seed: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(seed)
    figures = lipschitz(fn, points, pairs=LIPSCHITZ_PAIRS, quantile=QUANTILE, generator=g,
                        rms=True)
    return {f"lipschitz_{name}_mean": figures["mean"],
            f"lipschitz_{name}_q{round(QUANTILE * 100)}": figures["quantile"],
            f"lipschitz_{name}_max": figures["max"]}


def complexity(tokenizer: Tokenizer, test: Encoded, seed: int) -> dict[str, float]:
    """Lipschitz complexity of encoder (pixels -> normalised latent) and decoder (normalised
    latent -> pixels) over pairs of test items, RMS distances (docs/metrics.md)."""
    device = tokenizer.latent_shift.device

    def encoder(x: torch.Tensor) -> torch.Tensor:
        return tokenizer.normalize(tokenizer.encode(x.to(device)).latent).float().cpu()

    def decoder(z: torch.Tensor) -> torch.Tensor:
        return tokenizer.decode(tokenizer.denormalize(z.to(device))).float().cpu()

    return (_lipschitz_figures("encoder", encoder, test.x, seed)
            | _lipschitz_figures("decoder", decoder, test.z, seed))


def spread(tokenizer: Tokenizer, test: Encoded, seed: int) -> dict:
    """Cosine histogram and eigenvalue decay of the codebook entries (discrete) or of the
    flattened normalised test latents (continuous), as lists for plots."""
    if tokenizer.discrete:
        vectors = tokenizer.bottleneck.codebook_vectors().float().cpu()
        if len(vectors) > MAX_COSINE_ITEMS:
            vectors = vectors[torch.tensor(subset(len(vectors), MAX_COSINE_ITEMS, seed))]
        of = "codebook"
    else:
        vectors = test.z[torch.tensor(subset(len(test.z), MAX_COSINE_ITEMS, seed))]
        of = "latents"
    counts, edges = cosine_histogram(vectors, COSINE_BINS)
    return {"cosine_of": of,
            "cosine_histogram": {"counts": counts.tolist(), "edges": edges.tolist()},
            "eigenvalues": eigenvalue_decay(vectors).tolist()}


def reconstruction_distance(net: FeatureNet, tokenizer: Tokenizer, test: Encoded,
                            inception: str | os.PathLike | None,
                            views: dict[str, Embed] | None = None) -> dict[str, float]:
    """rfd: Fréchet distance between the classifier features of test items and of their
    reconstructions; rfd/VIEW the same in each of `views` (and inception_rfid with a
    user-supplied extractor)."""
    device = tokenizer.latent_shift.device
    with torch.no_grad():
        latent = tokenizer.denormalize(test.z.to(device))
        x_hat = tokenizer.decode(latent, batch_size=256).float().cpu()
    if x_hat.ndim == 4:
        x_hat = x_hat.clamp(-1, 1)
    out = {"rfd": frechet_distance(net.embed(test.x), net.embed(x_hat))}
    for name, embed in (views or {}).items():
        out[f"rfd/{name}"] = frechet_distance(embed(test.x), embed(x_hat))
    if inception is not None and x_hat.ndim == 4:
        out["inception_rfid"] = inception_fid(test.x, x_hat, inception)
    return out


def evaluate_tokenizer_run(run: str | Path, cache_dir: str | os.PathLike | None = None,
                           probe_steps: int = PROBE_STEPS, seed: int = 0,
                           inception: str | os.PathLike | None = None,
                           spec: str | None = None) -> dict:
    """Every tokenizer metric of run directory `run`, on the test split of its dataset.

    Args:
        run: a `train-tokenizer` run directory, or a diffusers autoencoder folder.
        cache_dir: root of the feature-network cache (see `evaluation.features.cache_root`).
        probe_steps: training steps of the predictability probe.
        seed: seed of the pair draws, subsets and the probe.
        inception: optional torch.export feature extractor (.pt2) for an Inception rFID.
        spec: the dataset a diffusers folder is evaluated on (statistics fitted on its
            training split, see `generation.encode.load_tokenizer`).

    Returns:
        A JSON-ready dict: scalars (mse, psnr, ssim, rfd, lipschitz_*, nn_accuracy,
        predictability, usage, perplexity, dead_codes, feature_net_accuracy) and plot data
        (cosine_histogram, eigenvalues); keys are documented in docs/metrics.md.
    """
    spec, tokenizer = load_run(run, spec)
    train, test_data = load_dataset(spec, "train"), load_dataset(spec, "test")
    out: dict = {"kind": "tokenizer", "data": spec, "seed": seed}
    out |= evaluate_tokenizer(tokenizer, test_data)  # mse, psnr, ssim; usage for discrete
    test = encode_items(tokenizer, test_data, list(range(len(test_data))))
    net = feature_network(spec, cache_dir)
    out["feature_net_accuracy"] = net.accuracy
    train_enc = encode_items(tokenizer, train, subset(len(train), MAX_TRAIN_ITEMS, seed))
    views = {}
    if test.x.ndim == 4:  # images: also the pixel and self-supervised views
        every, _ = dataset_views(spec, train_enc.x, cache_dir)
        views = {name: every[name] for name in ("pixels", "ssl") if name in every}
    out |= reconstruction_distance(net, tokenizer, test, inception, views)
    out |= complexity(tokenizer, test, seed)
    if train.num_classes:
        out["nn_accuracy"] = nearest_neighbour_accuracy(train_enc.z, train_enc.y, test.z, test.y)
    if tokenizer.discrete:
        out["predictability"] = predictability(train_enc.indices, test.indices, probe_steps,
                                               seed, tokenizer.bottleneck.codebook_size)
    else:
        out["predictability"] = predictability(train_enc.z, test.z, probe_steps, seed)
    out["predictability_unit"] = UNITS["discrete" if tokenizer.discrete else "continuous"]
    return out | spread(tokenizer, test, seed)
