"""The identity bottleneck and its per-channel normalisation."""

from __future__ import annotations

import pytest
import torch

from latentlab.tokenizers.bottlenecks import IdentityBottleneck, IdentityConfig

C = 3


def data(n: int = 64, seed: int = 0) -> torch.Tensor:
    """(n, C, 2, 2) channels_last latents with per-channel means (1, -2, 0), stds (2, 0.5, 1)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, C, 2, 2, generator=g)
    std, mean = torch.tensor([2.0, 0.5, 1.0]), torch.tensor([1.0, -2.0, 0.0])
    z = z * std[:, None, None] + mean[:, None, None]
    return z.to(memory_format=torch.channels_last)


def normalizing() -> IdentityBottleneck:
    return IdentityBottleneck(C, IdentityConfig(normalize=True))


def test_plain_identity_passes_the_latent_through():
    z = data()
    out = IdentityBottleneck(C).train()(z)
    assert out.latent is z and out.indices is None and out.loss == 0
    var = z.var(dim=(0, 2, 3), correction=0)
    torch.testing.assert_close(out.stats["latent_var"], var.mean())
    assert out.stats["dead_channels"] == 0


def test_dead_channels_are_counted():
    z = data()
    z[:, 1] = 0.5  # a constant channel
    assert IdentityBottleneck(C)(z).stats["dead_channels"].item() == pytest.approx(1 / C)


def test_training_standardises_each_channel_with_batch_statistics():
    latent = normalizing().train()(data()).latent
    mean = latent.mean(dim=(0, 2, 3))
    var = latent.var(dim=(0, 2, 3), correction=0)
    torch.testing.assert_close(mean, torch.zeros(C), rtol=0, atol=1e-5)
    torch.testing.assert_close(var, torch.ones(C), rtol=0, atol=1e-3)


def test_the_encoder_cannot_win_by_shrinking_the_latent():
    # the output is invariant to the latent's scale, so (up to eps) no gradient reaches that scale
    z = data()
    target = torch.randn(z.shape, generator=torch.Generator().manual_seed(1))

    def scale_gradient(bottleneck) -> float:
        scale = torch.tensor(1.0, requires_grad=True)
        (bottleneck.train()(z * scale).latent - target).square().sum().backward()
        return abs(scale.grad.item())

    # the plain identity's gradient is in the thousands: a real pull on the scale
    assert scale_gradient(normalizing()) < 1e-4 * scale_gradient(IdentityBottleneck(C))


def test_running_statistics_average_the_batches_and_serve_eval():
    bottleneck = normalizing().train()
    first = data(seed=0)
    bottleneck(first)  # the first update takes the batch statistics whole (warm-up)
    var, mean = torch.var_mean(first, dim=(0, 2, 3), correction=0)
    torch.testing.assert_close(bottleneck.running_mean, mean)
    torch.testing.assert_close(bottleneck.running_var, var)
    for seed in range(1, 20):
        bottleneck(data(seed=seed))
    torch.testing.assert_close(bottleneck.running_mean, torch.tensor([1.0, -2.0, 0.0]),
                               rtol=0, atol=0.1)
    torch.testing.assert_close(bottleneck.running_var, torch.tensor([4.0, 0.25, 1.0]), rtol=0.1,
                               atol=0)
    bottleneck.eval()
    z = data(n=2, seed=99)
    shape = (1, C, 1, 1)
    expected = ((z - bottleneck.running_mean.view(shape))
                / (bottleneck.running_var.view(shape) + 1e-5).sqrt())
    torch.testing.assert_close(bottleneck(z).latent, expected)
    assert int(bottleneck.num_updates) == 20


def test_one_token_per_channel_cannot_be_standardised_in_training():
    with pytest.raises(ValueError, match="^normalize: "):
        normalizing().train()(torch.randn(1, C))
    normalizing().eval()(torch.randn(1, C))  # eval uses the running statistics: fine


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="^momentum: "):
        IdentityConfig(momentum=0.0)
