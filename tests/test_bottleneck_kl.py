"""The KL bottleneck against the analytic KL of Gaussians."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from latentlab.tokenizers.bottlenecks import KLBottleneck, KLConfig

C, WEIGHT = 3, 0.5


def kl_bottleneck(**cfg) -> KLBottleneck:
    return KLBottleneck(C, KLConfig(weight=WEIGHT, **cfg))


def test_standard_normal_posterior_costs_nothing():
    out = kl_bottleneck().train()(torch.zeros(4, 2 * C, 2, 2))
    assert out.loss == 0 and out.stats["kl"] == 0 and out.stats["posterior_std"] == 1


def test_loss_is_weighted_kl_summed_over_dims_and_averaged_over_batch():
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(4, C, 2, 2, generator=g)
    # logvar 0: KL = 0.5 * sum m^2 per item
    out = kl_bottleneck().train()(torch.cat([mean, torch.zeros_like(mean)], 1))
    expected = 0.5 * mean.square().sum() / 4
    torch.testing.assert_close(out.stats["kl"], expected)
    torch.testing.assert_close(out.loss, WEIGHT * expected)
    # any logvar: agrees with torch.distributions
    logvar = torch.randn(4, C, 2, 2, generator=g)
    out = kl_bottleneck().eval()(torch.cat([mean, logvar], 1))
    q, p = Normal(mean, (0.5 * logvar).exp()), Normal(0.0, 1.0)
    torch.testing.assert_close(out.stats["kl"], kl_divergence(q, p).sum() / 4)


def test_eval_returns_the_mean_and_training_samples_with_the_posterior_std():
    mean = torch.full((4000, C), 3.0)
    logvar = torch.full((4000, C), 2 * torch.log(torch.tensor(0.5)).item())  # std 0.5
    z = torch.cat([mean, logvar], 1)
    assert torch.equal(kl_bottleneck().eval()(z).latent, mean)
    torch.manual_seed(0)
    sample = kl_bottleneck().train()(z).latent
    assert sample.mean().item() == pytest.approx(3.0, abs=0.02)
    assert sample.std().item() == pytest.approx(0.5, abs=0.02)


def test_logvar_is_clamped():
    z = torch.cat([torch.zeros(2, C), torch.full((2, C), 1e4)], 1)
    out = kl_bottleneck(logvar_max=2.0).train()(z)
    assert torch.isfinite(out.loss)
    assert out.stats["posterior_std"].item() == pytest.approx(torch.e ** 1.0, rel=1e-5)


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="^logvar_min: "):
        KLConfig(logvar_min=5.0, logvar_max=1.0)
    with pytest.raises(ValueError, match="^weight: "):
        KLConfig(weight=-1.0)
