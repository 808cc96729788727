"""Tiny generators: the small models whose losses measure how predictable a latent is.

One builder for the coupled recipe and `latentlab scaling`, so both fit the scaling law over the
same family of models. Continuous latents get an MLP denoiser on the flattened latent (any shape
works, and width is its only size knob); token indices get an autoregressive transformer. Both
are unconditional: predictability is measured without help from labels.

Legend: B batch, D flattened latent size, N tokens per item, V vocabulary.
"""

from __future__ import annotations

import math

from torch import nn

from latentlab.generators import PROCESSES, Process
from latentlab.generators.autoregressive import ARConfig, ARTransformer
from latentlab.generators.denoisers.mlp import MLPDenoiser, MLPDenoiserConfig

HEAD_WIDTH = 32
"""Width per attention head of the tiny transformers."""


def tiny_generator(shape: tuple[int, ...], width: int, depth: int, vocab_size: int = 0
                   ) -> nn.Module:
    """An unconditional tiny generator for items of `shape`.

    Args:
        shape: one item: a continuous latent (L, *S), or a token grid (*S) when vocab_size > 0.
        width: hidden width (MLP) or token width (transformer).
        depth: residual blocks (MLP) or transformer blocks.
        vocab_size: codebook size for token indices; 0 for continuous latents.

    Returns:
        An `MLPDenoiser` taking (B, D) inputs, or an `ARTransformer` over N = prod(shape) tokens.
    """
    size = max(1, math.prod(shape))
    if vocab_size:
        heads = max(1, width // HEAD_WIDTH)
        while width % heads:
            heads -= 1
        return ARTransformer(ARConfig(vocab_size=vocab_size, seq_len=size, width=width,
                                      depth=depth, heads=heads))
    return MLPDenoiser(size, MLPDenoiserConfig(width=width, depth=depth))


def tiny_process(family: str) -> Process:
    """The continuous process a tiny generator of `family` (flow, ddpm, vpsde) learns."""
    return PROCESSES[family]()


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
