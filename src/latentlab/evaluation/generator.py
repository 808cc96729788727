"""Evaluate a trained generator run: sample, decode, and score the samples against a reference
set of real items in every view (`evaluation.views`); for an autoregressive prior also the rate,
bits per dimension from its exact log-likelihood of the test tokens. Definitions in
docs/metrics.md.

Legend: N items, C channels, H height, W width, K classes, T tokens per item.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from latentlab import pixels
from latentlab.data import load_dataset
from latentlab.errors import UserError
from latentlab.evaluation.prompts import adherence_figures, read_prompts
from latentlab.evaluation.views import dataset_views
from latentlab.generation.encode import cached_split
from latentlab.generation.generator import Generator
from latentlab.generation.models import pixel_levels
from latentlab.generation.sample import prior_samples_to_file, sample_to_file
from latentlab.generators.pixelcnn import pixels_to_tokens
from latentlab.metrics.generation import generation_metrics

SAMPLES = "samples.npz"
PRIOR_SAMPLES = "prior_samples.npz"
DEFAULT_N = 2000
# the reference set is the test split unless it has fewer items than this, then the training
# split: Fréchet distances and k-NN manifolds of a few hundred items are dominated by their
# small-sample bias (digits: 360 test against 1437 training images)
MIN_REFERENCE = 1000
REFERENCES = ("auto", "test", "train")


def read_samples(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """A samples file -> (items (N, C, H, W) in [-1, 1] or vectors (N, D), labels (N,)).

    Reads latentlab's public format (`images` or `vectors`, `labels`) and the ADM evaluation
    suite's (`arr_0` uint8 (N, H, W, C), optional `arr_1` labels; unconditional without it).
    """
    try:
        with np.load(path, allow_pickle=False) as f:
            if "arr_0" in f and "images" not in f:  # ADM's layout
                images = torch.as_tensor(f["arr_0"])
                labels = (torch.as_tensor(f["arr_1"], dtype=torch.int64) if "arr_1" in f
                          else torch.full((len(images),), -1, dtype=torch.int64))
                key = "arr_0"
            else:
                labels = torch.as_tensor(f["labels"], dtype=torch.int64)
                key = "images" if "images" in f else None
                images = torch.as_tensor(f["images"]) if key else None
            if images is not None:
                if images.dtype != torch.uint8 or images.ndim != 4:
                    raise UserError(f"{path}: '{key}' must be uint8 (N, H, W, C), got "
                                    f"{images.dtype} {tuple(images.shape)}")
                items = rearrange(pixels.from_uint8(images), "n h w c -> n c h w")
            else:
                items = torch.as_tensor(f["vectors"], dtype=torch.float32)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{path}: not a samples file ({e})") from None
    if len(labels) != len(items):
        raise UserError(f"{path}: {len(items)} items but {len(labels)} labels")
    return items, labels


def reference_split(spec: str, reference: str = "auto") -> str:
    """The split samples are scored against: `reference`, or for "auto" the test split unless
    it has fewer than MIN_REFERENCE items (then the larger training split)."""
    if reference not in REFERENCES:
        raise UserError(f"--reference must be one of {', '.join(REFERENCES)}, got {reference!r}")
    if reference != "auto":
        return reference
    return "test" if len(load_dataset(spec, "test")) >= MIN_REFERENCE else "train"


def real_items(spec: str, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """Every item of a split and its labels; images pass through uint8 as samples do, so that
    quantisation is no difference between the two sets."""
    data = load_dataset(spec, split)
    batch = data.__getitems__(list(range(len(data))))
    x = pixels.from_uint8(pixels.to_uint8(batch.x)) if batch.x.ndim == 4 else batch.x.float()
    return x, batch.y


def score_samples(spec: str, samples: str | os.PathLike, cache_dir: str | os.PathLike | None
                  = None, inception: str | os.PathLike | None = None, seed: int = 0,
                  reference: str = "auto") -> dict:
    """Score a samples file against a reference split of dataset `spec`, in every view.

    Returns NAME/VIEW figures (fd, fd_floor, fd_inf, fd_inf_floor, kid, kid_std, precision,
    recall, density, coverage; see `metrics.generation.view_metrics`), class_accuracy
    (labelled samples of a labelled dataset), the judges' held-out figures
    (feature_net_accuracy, ssl_retrieval, ssl_knn_accuracy), the views, the reference split
    and the set sizes (samples, real).
    """
    fake, labels = read_samples(samples)
    split = reference_split(spec, reference)
    real, _ = real_items(spec, split)
    if fake.shape[1:] != real.shape[1:]:
        raise UserError(f"{samples}: items of shape {tuple(fake.shape[1:])}, but {spec} has "
                        f"{tuple(real.shape[1:])}")
    if len(fake) < 4:
        raise UserError(f"{samples}: {len(fake)} items; scoring needs at least 4")
    train = real if split == "train" else real_items(spec, "train")[0]
    views, judges = dataset_views(spec, train, cache_dir, inception)
    from latentlab.evaluation.features import feature_network

    out = generation_metrics(views, real, fake, labels, feature_network(spec, cache_dir), seed)
    return out | judges | {"views": list(views), "reference": split, "samples": len(fake),
                           "real": len(real)}


@torch.no_grad()
def ar_rate(generator: Generator, spec: str, batch_size: int = 256) -> dict[str, float]:
    """Rate of an autoregressive prior (ar, pixelcnn) on the test split's tokens, from its exact
    likelihood; a pixelcnn over pixels scores the test images quantised as it was trained.

    bits_per_token = -sum log2 p(tokens) / (items * T), and bits_per_dim the same total over
    items * C * H * W, the pixels and channels of the images the tokens stand for. A
    class-conditional prior is scored by its marginal p(x) = (1/K) sum_k p(x | k) (labels are
    not sent), and also given the true label (`bits_per_dim_given_label`); a text-conditioned
    one by p(x | null prompt), and given the item's caption (`bits_per_dim_given_prompt`).
    """
    text = generator.what.condition == "text"
    levels = pixel_levels(generator.cfg.generator, generator.what)
    tokens = (load_dataset(spec, "test") if levels else
              cached_split(generator.cfg.tokenizer, spec, "test", captions=text))
    batch = tokens.__getitems__(list(range(len(tokens))))
    x = pixels_to_tokens(batch.x, levels) if levels else batch.x
    x = rearrange(x, "n ... -> n (...)")  # (N, T)
    model, k = generator.network, generator.what.num_classes
    device = next(model.parameters()).device
    x = x.to(device)
    dims = math.prod(load_dataset(spec, "test").shape)

    def nats(cond: torch.Tensor | None) -> torch.Tensor:
        """(N,) log p(x | cond) summed over tokens, in batches (logits are (B, T, V)); cond
        (N, ...) conditions per item, or None."""
        parts = [model.log_prob(part, None if cond is None else cond[i:i + batch_size])
                 for i, part in zip(range(0, len(x), batch_size), x.split(batch_size),
                                    strict=True)]
        return torch.cat([p.double().sum(1) for p in parts])

    given = None
    if k:
        per_class = torch.stack([nats(torch.full((len(x),), c, device=device))
                                 for c in range(k)], dim=1)  # (N, K)
        marginal = torch.logsumexp(per_class, dim=1) - math.log(k)
        given = per_class.gather(1, batch.y.to(device)[:, None]).squeeze(1)
    else:
        marginal = nats(None)
        if text:
            ids = generator.prompts.encode_captions([tokens.caption(i)
                                                     for i in range(len(tokens))])
            given = nats(ids.to(device))
    bits = -float(marginal.sum()) / math.log(2)
    out = {"bits_per_token": bits / x.numel(), "bits_per_dim": bits / (len(x) * dims),
           "bits_per_image": bits / len(x)}
    if given is not None:
        name = "bits_per_dim_given_prompt" if text else "bits_per_dim_given_label"
        out[name] = -float(given.sum()) / math.log(2) / (len(x) * dims)
    return out


def heldout_figures(run: Path) -> dict[str, float]:
    """The held-out figures training left in RUN/metrics.json, as heldout_<name>."""
    try:
        test = json.loads((run / "metrics.json").read_text()).get("test", {})
    except (OSError, json.JSONDecodeError, AttributeError):
        return {}
    return {f"heldout_{k}": float(v) for k, v in test.items() if isinstance(v, int | float)}


def evaluate_generator_run(run: str | Path, n: int = DEFAULT_N,
                           cache_dir: str | os.PathLike | None = None, seed: int = 0,
                           samples: str | os.PathLike | None = None, steps: int | None = None,
                           inception: str | os.PathLike | None = None,
                           reference: str = "auto", nll_items: int = 0) -> dict:
    """Every generator metric of run directory `run`.

    Draws `n` samples (labels 0, 1, ..., K-1, 0, ... for a class-conditional generator, the
    test split's captions in order for a text-conditioned one) with the run's sampler and
    `steps` (default: the run's), writes them to RUN/samples.npz in the public format, and
    scores that file; or scores `samples` if given, drawing nothing.

    Returns:
        A JSON-ready dict: the figures of `score_samples`, prompt adherence (adherence/*, for
        samples with prompts on data with structured attributes; `evaluation.prompts`), the
        run's heldout_* training figures, for an autoregressive prior bits_per_dim,
        bits_per_token, bits_per_image (and bits_per_dim_given_label), and for a flow or
        VP-SDE generator, with `nll_items` > 0, nll_bits_per_dim of what it models on that many
        held-out items (`evaluation.likelihood`; an ODE solve per batch with a divergence per
        dimension: minutes on a CPU, so asked for, not done by default).
    """
    run = Path(run)
    generator = Generator.load(run)
    spec = generator.cfg.data.spec
    if samples is None:
        if n < 2:
            raise UserError(f"--n must be >= 2 to score samples, got {n}")
        samples = run / SAMPLES
        sample_to_file(run, n, samples, steps=steps, seed=seed)
    out = {"kind": "generator", "family": generator.family, "data": spec,
           "seed": seed, "samples_file": str(samples)}
    out |= score_samples(spec, samples, cache_dir, inception, seed, reference)
    prompts = read_prompts(samples)
    if prompts is not None:
        out |= adherence_figures(spec, read_samples(samples)[0], prompts, cache_dir)
    out |= heldout_figures(run)
    if generator.family in ("ar", "pixelcnn"):
        out |= ar_rate(generator, spec)
    if nll_items and generator.family in ("flow", "vpsde"):
        from latentlab.evaluation.likelihood import latent_rate

        out |= latent_rate(generator, spec, items=nll_items, seed=seed)
    return out


def evaluate_vae_prior(tokenizer_run: str | Path, n: int = DEFAULT_N,
                       cache_dir: str | os.PathLike | None = None, seed: int = 0,
                       spec: str = "", reference: str = "auto") -> dict:
    """The VAE's own sampler scored as a generator's samples are: n decoded N(0, I) draws of
    the KL tokenizer run `tokenizer_run` (`generation.sample.prior_samples_to_file`), written
    to RUN/prior_samples.npz, against the `reference` split of `spec` (default: the run's
    data), in every view. What a latent generator adds is its figures against these."""
    from latentlab.generation.sample import run_data

    spec = spec or run_data(tokenizer_run)
    samples = Path(tokenizer_run) / PRIOR_SAMPLES
    prior_samples_to_file(tokenizer_run, n, samples, spec, seed=seed)
    return {"kind": "vae_prior", "data": spec, "seed": seed, "samples_file": str(samples)} | (
        score_samples(spec, samples, cache_dir, seed=seed, reference=reference))
