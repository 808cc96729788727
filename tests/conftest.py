"""Shared fixtures: tiny, fast configurations."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from latentlab.data.config import DataConfig
from latentlab.recipes.train import TokenizerRunConfig
from latentlab.tokenizers.conv import ConvConfig
from latentlab.tokenizers.tokenizer import TokenizerConfig
from latentlab.training.config import TrainConfig


def pytest_configure(config):
    """Torch on one thread in every test process: the tests' matmuls are small, so threads add
    only spin, and `make test` runs one process per core (pytest-xdist) instead."""
    torch.set_num_threads(1)


def tiny_run_config(**train) -> TokenizerRunConfig:
    """A digits autoencoder small enough to train a few dozen steps in about a second."""
    defaults = dict(steps=20, batch_size=16, lr=3e-3, warmup=2, log_every=5, eval_every=0,
                    checkpoint_every=10, ema=0.9)
    return TokenizerRunConfig(
        data=DataConfig(spec="digits"),
        model=TokenizerConfig(latent_channels=2, arch=ConvConfig(channels=8, ch_mult=(1, 2))),
        train=TrainConfig(**{**defaults, **train}),
    )


@pytest.fixture
def tiny_config():
    return tiny_run_config


def replace_train(cfg: TokenizerRunConfig, **train) -> TokenizerRunConfig:
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train))


def run_main(capsys, argv: list[str]) -> tuple[int, str, str]:
    """`latentlab ARGV` in-process: (exit status, stdout, stderr)."""
    from latentlab.cli import main

    try:
        code = main(argv)
    except SystemExit as e:  # argparse exits by itself on usage errors
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err
