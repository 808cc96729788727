"""The likelihood a flow or VP-SDE generator gives held-out data, in bits per dimension.

`latent_rate` scores the test split's items (the tokenizer's normalised latents, or the data
itself for a generator without a tokenizer) under the generator's probability-flow ODE
(`generators.likelihood`), each item given its own condition (its label or caption; none for an
unconditional generator), without guidance. These are bits per dimension of what the generator
models. For a latent generator that is not a rate of the images: the decoder maps d latent
dimensions into D > d pixel dimensions, no bijection, so no change of variables carries the
density to pixels (the generator puts all its mass on a d-dimensional set of images).
"""

from __future__ import annotations

import math

import torch

from latentlab.data import load_dataset
from latentlab.generation.encode import cached_split
from latentlab.generation.generator import Generator
from latentlab.generators.likelihood import TOLERANCE

NLL_ITEMS = 256
"""Test items scored (a seeded subset when the split is larger)."""
BATCH = 64


def latent_rate(generator: Generator, spec: str, items: int = NLL_ITEMS, seed: int = 0,
                tol: float = TOLERANCE) -> dict[str, float | str]:
    """-log2 p(x | condition) / dims over up to `items` test items, with its standard error.

    Returns:
        nll_bits_per_dim (mean over items), nll_bits_per_dim_se (their standard error; with
        Hutchinson's estimator it includes the probes' spread), nll_items, nll_estimator
        ("exact" or "hutchinson-K"), nll_condition (label, prompt or none), nll_nfe (mean
        network evaluations per solve) and nll_of ("latent" or "data").
    """
    text = generator.what.condition == "text"
    if generator.cfg.tokenizer:
        data = cached_split(generator.cfg.tokenizer, spec, "test", captions=text)
    else:
        data = load_dataset(spec, "test")
    g = torch.Generator().manual_seed(seed)
    chosen = sorted(torch.randperm(len(data), generator=g)[:items].tolist())
    batch = data.__getitems__(chosen)
    param = next(generator.network.parameters())
    x = batch.x.to(param.device, torch.float32)
    if text:
        cond = generator.prompts.encode_captions([data.caption(i) for i in chosen])
    else:
        cond = batch.y if generator.what.num_classes else None
    bits, nfe, estimator = [], [], ""
    for i in range(0, len(x), BATCH):
        part = None if cond is None else cond[i:i + BATCH].to(param.device)
        found = generator.process.log_likelihood(generator.network, x[i:i + BATCH], part,
                                                 tol=tol, generator=g)
        bits.append(found.bits_per_dim.double().cpu())
        nfe.append(found.nfe)
        estimator = found.estimator
    bits = torch.cat(bits)
    return {"nll_bits_per_dim": float(bits.mean()),
            "nll_bits_per_dim_se": float(bits.std() / math.sqrt(len(bits))),
            "nll_items": len(bits), "nll_estimator": estimator,
            "nll_condition": "prompt" if text else "label" if cond is not None else "none",
            "nll_nfe": sum(nfe) / len(nfe),
            "nll_of": "latent" if generator.cfg.tokenizer else "data"}
