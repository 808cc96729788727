"""The VQGAN-style adversarial loss through the engine's two optimizers."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from latentlab.recipes.baseline import LossConfig
from latentlab.tokenizers.discriminator import DiscriminatorConfig
from latentlab.training import checkpoint
from latentlab.training.rundir import read_metrics

from .conftest import replace_train


def gan_config(tiny_config, **train):
    cfg = tiny_config(**{"checkpoint_every": 8, **train})
    loss = LossConfig(gan=True, discriminator=DiscriminatorConfig(channels=8, start=4))
    return dataclasses.replace(cfg, loss=loss)


def final_weights(run):
    return load_file(checkpoint.latest(run / "checkpoints") / checkpoint.WEIGHTS)


@pytest.mark.slow
def test_gan_phase_trains_the_discriminator_after_its_start(tmp_path, tiny_config):
    from latentlab.recipes.train import train_tokenizer

    train_tokenizer(gan_config(tiny_config, steps=16, log_every=2), tmp_path / "run")
    records = read_metrics(tmp_path / "run")
    d_losses = [r["gan/d_loss"] for r in records if "gan/d_loss" in r]
    weights = [r["gan/adaptive_weight"] for r in records if "gan/adaptive_weight" in r]
    assert len(d_losses) == 6  # logged from step 4 on, every 2 steps: steps 6..16
    assert all(w > 0 for w in weights)
    first = [r for r in records if "loss/recon" in r][0]
    assert "gan/d_loss" not in first  # not before `start`


@pytest.mark.slow
def test_resume_across_both_optimizers_is_exact(tmp_path, tiny_config):
    from latentlab.recipes.train import train_tokenizer

    # a constant schedule: the 8-step leg then has the learning rates of the 16-step run
    cfg = gan_config(tiny_config, steps=16, schedule="constant")
    train_tokenizer(cfg, tmp_path / "straight")
    train_tokenizer(replace_train(cfg, steps=8), tmp_path / "split")
    train_tokenizer(cfg, tmp_path / "split", mode="resume")
    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "split")
    assert any(k.startswith("model.discriminator.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
