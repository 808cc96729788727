"""The decoupled autoencoder (DAE, `004_*.txt`): train the encoder with a weak decoder, then
freeze it and train a full decoder.

A weak decoder cannot undo a complicated encoder, so in stage 1 the encoder is pushed toward a
latent that is simple to decode, and so simple to model; stage 2 then buys back reconstruction
with a fresh full-width decoder on the frozen latent. The stage-1 decoder is weakened by width
(a multiplier < 1 on the decoder's channels or hidden units), by channel dropout in its residual
blocks, or both.

Stage 2 runs encoder and bottleneck in eval mode under no_grad: their weights (and a VQ
codebook, and running statistics) stay bitwise fixed, and a KL bottleneck hands the decoder its
posterior mean, which is what the latent caches of generators hold. The switch step is a buffer
of the objective, so a resumed run switches where the original did even if `train.steps`
changes.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from latentlab.errors import ConfigError
from latentlab.recipes.config import DAEConfig
from latentlab.tokenizers.conv import ConvDecoder
from latentlab.tokenizers.diffusers_ae import DiffusersDecoder
from latentlab.tokenizers.mlp import MLPDecoder
from latentlab.tokenizers.tokenizer import TokenizerConfig


def weak_decoder(model: TokenizerConfig, in_channels: int, dae: DAEConfig) -> nn.Module:
    """The stage-1 decoder: the model's decoder at width `dae.weak_width` with channel dropout
    `dae.weak_dropout` (element dropout for the MLP decoder)."""
    latent = model.latent_channels
    if model.arch.kind == "diffusers":
        if dae.weak_dropout:
            raise ConfigError("dae.weak_dropout: diffusers' Decoder has no dropout; weaken it "
                              "with dae.weak_width")
        return DiffusersDecoder(model.arch, latent, in_channels, width=dae.weak_width)
    if model.arch.kind == "conv":
        conv = dataclasses.replace(model.arch, channel_dropout=dae.weak_dropout)
        return ConvDecoder(conv, latent, in_channels, width=dae.weak_width)
    mlp = dataclasses.replace(model.arch, dropout=dae.weak_dropout)
    return MLPDecoder(mlp, latent, in_channels, width=dae.weak_width)


def switch_step(steps: int, dae: DAEConfig) -> int:
    """First step of stage 2: the stage-1 share of `steps`, leaving each stage at least one."""
    return min(max(1, round(dae.stage1_fraction * steps)), steps - 1) if steps > 1 else 1
