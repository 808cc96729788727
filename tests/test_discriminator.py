"""PatchGAN discriminator and GAN losses: patch maps on small and larger images, losses against
hand-computed values, VQGAN's adaptive weight against gradients worked out by hand, and a
discriminator that really learns to tell digits from noise."""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest
import torch

from latentlab.config import field_docs
from latentlab.pixels import from_unit
from latentlab.tokenizers.discriminator import (
    GAN_LOSSES,
    DiscriminatorConfig,
    PatchDiscriminator,
    adaptive_weight,
    discriminator_loss,
    generator_loss,
    hinge_d_loss,
    hinge_g_loss,
    non_saturating_d_loss,
    non_saturating_g_loss,
)


@pytest.mark.parametrize("layers, size, side", [
    (3, 8, 2),  # digits: 8 -> 4 -> 2, the third layer at stride 1
    (3, 16, 2),
    (3, 28, 3),  # 28 -> 14 -> 7 -> 3
    (3, 32, 4),  # three halvings, as in taming
    (1, 8, 4),
    (5, 32, 2),
])
def test_output_is_a_patch_map_that_never_shrinks_below_2x2(layers, size, side):
    disc = PatchDiscriminator(3, DiscriminatorConfig(channels=8, layers=layers))
    assert disc(torch.randn(2, 3, size, size)).shape == (2, 1, side, side)


def test_one_discriminator_takes_any_size_in_bf16_channels_last():
    disc = PatchDiscriminator(1, DiscriminatorConfig(channels=8))
    for size in (8, 32):
        x = torch.randn(2, 1, size, size).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = disc(x)
        assert logits.dtype == torch.bfloat16 and logits.shape[:2] == (2, 1)
        assert torch.isfinite(logits).all()


def test_init_is_dcgans():
    torch.manual_seed(0)
    disc = PatchDiscriminator(1, DiscriminatorConfig(channels=64))
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert abs(convs[2].weight.std().item() - 0.02) < 0.002  # 128 -> 256 channels, 4x4
    assert all(torch.all(c.bias == 0) for c in convs if c.bias is not None)
    assert not any(c.bias is not None for c in convs[1:-1])  # GroupNorm's shift instead


def test_losses_match_hand_computed_values():
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, 0.0, 1.0])
    # relu(1 - real) = [0, 0.5, 2], relu(1 + fake) = [0, 1, 2]
    torch.testing.assert_close(hinge_d_loss(real, fake), torch.tensor(0.5 * (2.5 / 3 + 1.0)))
    torch.testing.assert_close(hinge_g_loss(fake), torch.tensor(1 / 3))
    softplus = [math.log1p(math.exp(v)) for v in (-2.0, -0.5, 1.0, -2.0, 0.0, 1.0)]
    torch.testing.assert_close(non_saturating_d_loss(real, fake),
                               torch.tensor(0.5 * (sum(softplus[:3]) / 3 + sum(softplus[3:]) / 3)))
    g = sum(math.log1p(math.exp(-v)) for v in (-2.0, 0.0, 1.0)) / 3
    torch.testing.assert_close(non_saturating_g_loss(fake), torch.tensor(g))
    # the dispatchers pick the pair by name, and bf16 logits give fp32 losses
    assert discriminator_loss(real, fake, "hinge") == hinge_d_loss(real, fake)
    assert generator_loss(fake, "non_saturating") == non_saturating_g_loss(fake)
    assert hinge_d_loss(real.bfloat16(), fake.bfloat16()).dtype == torch.float32


def test_adaptive_weight_is_the_ratio_of_gradient_norms_clamped_and_detached():
    torch.manual_seed(0)
    weight = torch.randn(3, 2, requires_grad=True)  # a linear "decoder": y = z W^T
    z, target, critic = torch.randn(5, 2), torch.randn(5, 3), torch.randn(3)

    def losses(scale=1.0):
        y = z @ weight.T  # (5, 3)
        # a nonlinear "critic", so that the GAN gradient itself depends on the weight
        return (y - target).square().mean(), -scale * (y.tanh() @ critic).mean()

    rec, g = losses()
    y = (z @ weight.T).detach()
    grad_rec = 2 / 15 * (y - target).T @ z  # d mean((y - t)^2) / dW
    grad_g = -(critic * (1 - y.tanh() ** 2)).T @ z / 5  # d -mean(tanh(y) . c) / dW
    w = adaptive_weight(rec, g, weight, max_weight=1e4)
    torch.testing.assert_close(w, grad_rec.norm() / (grad_g.norm() + 1e-4))
    assert not w.requires_grad and weight.grad is None
    # the graphs survive for the full loss, whose gradient has no term through w
    (rec + w * g).backward()
    torch.testing.assert_close(weight.grad, grad_rec + w * grad_g)

    rec, g = losses(scale=1e-6)  # a vanishing GAN gradient: the ratio explodes
    assert adaptive_weight(rec, g, weight, max_weight=2.0).item() == 2.0


def test_config_validates_and_documents_every_field():
    for kwargs, field in [(dict(layers=0), "layers"), (dict(start=-1), "start"),
                          (dict(weight=-0.1), "weight"), (dict(max_adaptive_weight=0.0),
                                                          "max_adaptive_weight"),
                          (dict(loss="wasserstein"), "loss")]:
        with pytest.raises(ValueError, match=f"^{field}: "):
            DiscriminatorConfig(**kwargs)
    hints = typing.get_type_hints(DiscriminatorConfig)
    assert set(GAN_LOSSES) == set(typing.get_args(hints["loss"]))
    assert set(field_docs(DiscriminatorConfig)) == {
        f.name for f in dataclasses.fields(DiscriminatorConfig)}


def accuracy(disc, real, fake) -> float:
    """Fraction of images classified right by the sign of their mean patch logit."""
    with torch.no_grad():
        right = (disc(real).mean((1, 2, 3)) > 0).sum() + (disc(fake).mean((1, 2, 3)) < 0).sum()
    return right.item() / (len(real) + len(fake))


def test_learns_to_tell_real_digits_from_noise():
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    digits = from_unit(load_digits().images / 16.0).unsqueeze(1)  # (1797, 1, 8, 8) in [-1, 1]
    train, test = digits[:1500], digits[1500:]
    disc = PatchDiscriminator(1, DiscriminatorConfig(channels=8))
    noise = torch.randn_like(test)
    assert accuracy(disc, test, noise) < 0.9  # not already solved at init
    opt = torch.optim.Adam(disc.parameters(), lr=1e-3, betas=(0.5, 0.9))
    for _ in range(50):
        real = train[torch.randint(len(train), (32,))]
        loss = hinge_d_loss(disc(real), disc(torch.randn_like(real)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert accuracy(disc, test, noise) > 0.9
