"""Predictability of a latent: the held-out loss of a fixed small generator trained on it.

A latent that a generator models well is the point of the whole toolkit, so the probe is a
generator, trained with one fixed protocol for every tokenizer (same network, budget, seed):

- continuous latents (B, L, *S): standardised per channel with the training latents' mean and
  standard deviation (so that a tokenizer cannot look predictable by shrinking its latent, the
  "change of scale" of the DAE paper's Remark 3.6), flattened to vectors (B, D), and modelled by
  flow matching with an unconditional MLP denoiser (width 128, 2 residual blocks), Adam at
  1e-3, batch 128, `steps` steps. The figure is the held-out flow-matching loss (mean squared
  velocity error per element, averaged over 4 draws of time and noise per test item): lower is
  more predictable.
- token indices (B, *S): an unconditional autoregressive transformer (width 64, 2 blocks,
  2 heads) over the raster-order tokens, Adam at 1e-3, batch 128, `steps` steps. The figure is
  the held-out cross-entropy in bits per token: lower is more predictable.

The two figures have different units and compare only among latents of the same kind.

Legend: N items, B batch, L latent channels, S spatial dims, D flattened size, T tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange

from latentlab.generators.autoregressive import ARConfig, ARTransformer
from latentlab.generators.denoisers.mlp import MLPDenoiser, MLPDenoiserConfig
from latentlab.generators.flow import FlowMatching

PROBE_STEPS = 500
"""Default training steps of the probe."""
BATCH, LR = 128, 1e-3
FLOW_WIDTH, FLOW_DEPTH = 128, 2
AR_WIDTH, AR_DEPTH, AR_HEADS = 64, 2, 2
EVAL_DRAWS = 4  # draws of (t, noise) per test item: the flow loss is noisy per draw
UNITS = {"continuous": "flow_mse", "discrete": "bits_per_token"}


def standardise(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel (dim 1) with the training set's statistics, then flattened: (N, L, *S) ->
    (N, D) float32 each."""
    dims = [d for d in range(train.ndim) if d != 1]
    mean = train.double().mean(dims, keepdim=True)
    std = train.double().std(dims, keepdim=True).clamp_min(1e-8)  # a dead channel stays finite

    def apply(x: torch.Tensor) -> torch.Tensor:
        return rearrange(((x.double() - mean) / std).float(), "n ... -> n (...)")

    return apply(train), apply(test)


def _train(model: torch.nn.Module, loss_fn, data: torch.Tensor, steps: int,
           g: torch.Generator) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(data), (min(BATCH, len(data)),), generator=g)
        loss = loss_fn(data[idx.to(data.device)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()


def flow_probe(train: torch.Tensor, test: torch.Tensor, steps: int, seed: int) -> float:
    """Held-out flow-matching loss of the fixed MLP probe on continuous latents (N, L, *S)."""
    x, x_test = standardise(train, test)
    process = FlowMatching()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MLPDenoiser(x.shape[1], MLPDenoiserConfig(width=FLOW_WIDTH, depth=FLOW_DEPTH))
    model = model.to(x.device)
    g = torch.Generator(x.device).manual_seed(seed)
    _train(model, lambda xb: process.loss(model, xb, generator=g).loss, x, steps, g)
    g_eval = torch.Generator(x.device).manual_seed(seed + 1)
    total = 0.0
    with torch.no_grad():
        for _ in range(EVAL_DRAWS):
            for part in x_test.split(1024):
                total += float(process.loss(model, part, generator=g_eval).per_item.sum())
    return total / (EVAL_DRAWS * len(x_test))


def token_probe(train: torch.Tensor, test: torch.Tensor, vocab_size: int, steps: int,
                seed: int) -> float:
    """Held-out bits per token of the fixed AR probe on token indices (N, *S)."""
    tokens = rearrange(train, "n ... -> n (...)")  # (N, T), raster order
    tokens_test = rearrange(test, "n ... -> n (...)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ARTransformer(ARConfig(width=AR_WIDTH, depth=AR_DEPTH, heads=AR_HEADS),
                              vocab_size, tokens.shape[1])
    model = model.to(tokens.device)
    g = torch.Generator(tokens.device).manual_seed(seed)

    def loss_fn(batch: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(batch).float().flatten(0, 1), batch.flatten())

    _train(model, loss_fn, tokens, steps, g)
    with torch.no_grad():
        nats = -sum(float(model.log_prob(part).sum()) for part in tokens_test.split(1024))
    return nats / tokens_test.numel() / math.log(2)


def predictability(train_latents: torch.Tensor, test_latents: torch.Tensor,
                   steps: int = PROBE_STEPS, seed: int = 0,
                   vocab_size: int | None = None) -> float:
    """Held-out loss of the fixed probe generator (see the module docstring); lower is better.

    Args:
        train_latents: (N, L, *S) float latents, or (N, *S) int64 token indices.
        test_latents: held-out latents of the same kind and item shape.
        steps: training steps of the probe (default `PROBE_STEPS`).
        seed: seed of its weights, batches and noise; same inputs and seed, same figure.
        vocab_size: codebook size for token indices (default: the largest index seen + 1).

    Returns:
        The flow-matching loss per element (float latents) or bits per token (indices).
    """
    assert train_latents.shape[1:] == test_latents.shape[1:], (
        f"latents differ in shape: {tuple(train_latents.shape)} vs {tuple(test_latents.shape)}")
    assert len(train_latents) >= 2 and len(test_latents) >= 1, "need training and test latents"
    if train_latents.is_floating_point():
        assert train_latents.ndim >= 2, "float latents must be (N, L, *S)"
        return flow_probe(train_latents, test_latents, steps, seed)
    if vocab_size is None:
        vocab_size = int(max(train_latents.max(), test_latents.max())) + 1
    return token_probe(train_latents, test_latents, vocab_size, steps, seed)
