"""DALL-E's Gumbel-softmax bottleneck: the relaxation, its annealing, the KL to the uniform
prior, exact hard codes, and a dVAE that trains (the shared contract is in
test_bottleneck_contract.py)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from latentlab.recipes.train import train_tokenizer
from latentlab.tokenizers.bottlenecks import GumbelConfig, GumbelQuantizer
from latentlab.tokenizers.tokenizer import Tokenizer
from tests.conftest import tiny_run_config


def test_relaxed_samples_approach_one_hot_as_the_temperature_falls():
    torch.manual_seed(0)
    logits = torch.randn(2000, 16)
    peaks = [float(F.gumbel_softmax(logits, tau=tau).max(-1).values.mean())
             for tau in (2.0, 1.0, 0.3, 0.1, 0.03)]
    assert all(a < b for a, b in zip(peaks, peaks[1:], strict=False)), peaks
    assert peaks[-1] > 0.97 and peaks[0] < 0.6


def test_the_temperature_anneals_exponentially_and_stays_at_its_end():
    cfg = GumbelConfig(tau_start=1.0, tau_end=1 / 16, anneal_steps=100)
    assert cfg.temperature(0) == 1.0
    assert cfg.temperature(50) == pytest.approx(0.25)  # the geometric mean of 1 and 1/16
    assert cfg.temperature(100) == pytest.approx(1 / 16)
    assert cfg.temperature(10_000) == pytest.approx(1 / 16)
    cfg = dataclasses.replace(cfg, codebook_size=16)
    bottleneck = GumbelQuantizer(4, cfg).train()
    bottleneck.set_step(50)
    out = bottleneck(torch.randn(8, 16, 2, 2))
    assert float(out.stats["temperature"]) == pytest.approx(0.25)
    # the step is state: a bottleneck loaded from it anneals on from there
    again = GumbelQuantizer(4, cfg)
    again.load_state_dict(bottleneck.state_dict())
    assert again.temperature == pytest.approx(0.25)


def test_the_kl_to_the_uniform_prior_is_zero_at_uniform_and_log_k_when_certain():
    assert float(GumbelQuantizer.kl_to_uniform(torch.zeros(5, 8))) == pytest.approx(0, abs=1e-6)
    certain = torch.full((5, 8), -1e4)
    certain[:, 3] = 0
    assert float(GumbelQuantizer.kl_to_uniform(certain)) == pytest.approx(math.log(8))


def test_hard_indices_and_codes_map_exactly():
    torch.manual_seed(1)
    bottleneck = GumbelQuantizer(3, GumbelConfig(codebook_size=10)).eval()
    out = bottleneck(torch.randn(4, 10, 3, 3))
    assert out.indices.shape == (4, 3, 3)
    assert torch.equal(bottleneck.indices_to_codes(out.indices), out.latent)
    assert torch.equal(bottleneck.codes_to_indices(out.latent), out.indices)
    every = torch.arange(10).view(1, 10, 1)
    assert torch.equal(bottleneck.codes_to_indices(bottleneck.indices_to_codes(every)), every)


def test_a_short_dvae_run_reconstructs_and_anneals_with_the_training_step(tmp_path):
    # a dVAE learns slowly at first: near-uniform logits give random codes until they sharpen
    cfg = tiny_run_config(steps=120, lr=5e-3)
    bottleneck = GumbelConfig(codebook_size=16, anneal_steps=80, kl_weight=1e-4)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, latent_channels=4,
                                                             bottleneck=bottleneck))
    metrics = train_tokenizer(cfg, tmp_path / "run")
    assert metrics["test"]["mse"] < 0.7 * metrics["mean_image_mse"], metrics["test"]
    assert metrics["test"]["usage"] > 0.2
    tokenizer = Tokenizer.load(tmp_path / "run")
    assert tokenizer.discrete and int(tokenizer.bottleneck.step) == 119
    assert tokenizer.bottleneck.temperature == pytest.approx(1 / 16)
