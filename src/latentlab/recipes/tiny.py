"""Tiny generators: the small models whose losses measure how predictable a latent is.

One builder for the coupled recipe and `latentlab scaling`, so both fit the scaling law over the
same family of models. Continuous latents get an MLP denoiser on the flattened latent (any shape
works, and width is its only size knob) or, given the big generator's DiT, that DiT in miniature:
the same patch size, depth, head width, MLP ratio and class table at a smaller width (`000_*.txt`:
"a tiny version of the big generator"). Token indices get an autoregressive transformer. On
captioned data every tiny generator is conditioned on the prompt, as the big text-to-image
generator is ("predicts the noise conditioned on the text prompt", `000_*.txt`), each through its
own small text encoder at its width; otherwise they are trained and scored unconditionally (a
tiny DiT always gets the null class): predictability is measured without help from labels, and
the big generator is checked on its null-class branch.

Legend: B batch, D flattened latent size, N tokens per item, V vocabulary.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from latentlab.data.text import TextTokenizer
from latentlab.generators import PROCESSES, Process
from latentlab.generators.autoregressive import ARConfig, ARTransformer
from latentlab.generators.denoisers.dit import DiT, DiTConfig
from latentlab.generators.denoisers.mlp import MLPDenoiser, MLPDenoiserConfig
from latentlab.nn.text import TextEncoder

HEAD_WIDTH = 32
"""Width per attention head of the tiny transformers."""


@dataclass(frozen=True)
class BigGenerator:
    """What the scaling fit extrapolates to: the generator trained later on this latent."""

    parameters: int
    """N_big, counted as for the tiny generators (every parameter of the network)."""
    samples: float = math.inf
    """S_big, the samples it trains on (steps x batch); inf: trained to convergence."""
    dit: DiTConfig | None = None
    """Its DiT, when it is one (what a tiny DiT is a miniature of)."""
    num_classes: int = 0
    """The classes its data has (a tiny DiT keeps the big one's class table)."""


class Flattened(nn.Module):
    """A denoiser of (B, *shape) latents called, as the tiny MLPs are, on (B, D) inputs."""

    def __init__(self, net: nn.Module, shape: tuple[int, ...]):
        super().__init__()
        self.net, self.shape = net, tuple(shape)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None
                ) -> torch.Tensor:
        return self.net(x.reshape(-1, *self.shape), t, cond).flatten(1)


def tiny_text(prompts: TextTokenizer | None, width: int) -> dict:
    """{"text": a one-block text encoder of `width`} for a tiny generator of prompts encoded
    by `prompts`; {} without prompts."""
    if prompts is None:
        return {}
    return {"text": TextEncoder(prompts.vocab_size, prompts.max_len, prompts.null_ids,
                                prompts.pad_id, width, depth=1, heads=heads_of(width))}


def heads_of(width: int) -> int:
    """Heads of a tiny transformer: about `HEAD_WIDTH` channels each, dividing width."""
    heads = max(1, width // HEAD_WIDTH)
    while width % heads:
        heads -= 1
    return heads


def tiny_dit(big: DiTConfig, width: int, shape: tuple[int, ...], num_classes: int = 0,
             prompts: TextTokenizer | None = None) -> DiT:
    """The big DiT at `width` for latents of `shape` (C, h, w): its patch size, depth, MLP
    ratio, class table (`num_classes`) and head width (so width / head width heads; width must
    be a multiple of the head width), conditioned on text when `prompts` is given."""
    head = big.width // big.heads
    if width % head:
        raise ValueError(f"widths: a tiny DiT keeps the big one's head width {head}; "
                         f"{width} is not a multiple of it")
    c, h, _ = shape
    return DiT(dataclasses.replace(big, width=width, heads=width // head), c, h,
               0 if prompts else num_classes, **tiny_text(prompts, width))


def tiny_generator(shape: tuple[int, ...], width: int, depth: int, vocab_size: int = 0,
                   dit: DiTConfig | None = None, num_classes: int = 0,
                   prompts: TextTokenizer | None = None) -> nn.Module:
    """A tiny generator for items of `shape`: unconditional, or text-conditioned given the
    tokenizer of the prompts.

    Args:
        shape: one item: a continuous latent (L, *S), or a token grid (*S) when vocab_size > 0.
        width: hidden width (MLP) or token width (transformer).
        depth: residual blocks (MLP) or transformer blocks (ignored for a tiny DiT).
        vocab_size: codebook size for token indices; 0 for continuous latents.
        dit: the big generator's DiT: build it in miniature (`tiny_dit`) instead of an MLP.
        num_classes: the class table of a tiny DiT (the big one's; none with prompts).
        prompts: the tokenizer of the prompts it is conditioned on, or None.

    Returns:
        A denoiser taking (B, D) inputs (an `MLPDenoiser`, or a `Flattened` tiny DiT), or an
        `ARTransformer` over N = prod(shape) tokens.
    """
    size = max(1, math.prod(shape))
    if dit is not None:
        return Flattened(tiny_dit(dit, width, shape, num_classes, prompts), shape)
    if vocab_size:
        return ARTransformer(ARConfig(width=width, depth=depth, heads=heads_of(width)),
                             vocab_size, size, **tiny_text(prompts, width))
    return MLPDenoiser(size, MLPDenoiserConfig(width=width, depth=depth),
                       **tiny_text(prompts, width))


def tiny_process(family: str) -> Process:
    """The continuous process a tiny generator of `family` (flow, ddpm, vpsde) learns."""
    return PROCESSES[family]()


EVAL_SEED = 0
"""Seed of the held-out t and noise draws: the same for every model scored, so differences
between models are not drowned in draw noise (common random numbers)."""


@torch.no_grad()
def binned_losses(process: Process, model: nn.Module, x0: torch.Tensor, bins: int,
                  cond: torch.Tensor | None = None, seed: int = EVAL_SEED) -> torch.Tensor:
    """(bins,) the process loss of `model` on held-out x0 (N, *D) per t-bin: every item once in
    every bin, at t uniform within the bin, under draws fixed by `seed`.

    The tiny generators of a coupled recipe and the big generator they predict are scored by
    this one function, so predicted and actual losses are the same quantity.
    """
    g = torch.Generator(device="cpu").manual_seed(seed)
    losses = []
    for b in range(bins):
        u = torch.rand(len(x0), generator=g, dtype=torch.float64)
        t = ((b + u) / bins).to(x0.device, x0.dtype)
        noise = torch.randn(x0.shape, generator=g).to(x0.device, x0.dtype)
        x_t = process.add_noise(x0, noise, t)
        error = model(x_t, t, cond).float() - process.target(x0, noise, t).float()
        losses.append(error.pow(2).flatten(1).mean(1).mean())
    return torch.stack(losses)
