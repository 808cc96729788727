"""The DCGAN-style generator and discriminator, the shared GAN losses, and short real training
runs on the 8-cluster 2-D mixture."""

from __future__ import annotations

import ast
import inspect
import math

import pytest
import torch

import latentlab.generators.gan as gan_module
import latentlab.tokenizers.discriminator as tokenizer_discriminator
from latentlab.generators.gan import GANConfig, GANDiscriminator, GANGenerator
from latentlab.nn import gan_losses
from latentlab.nn.gan_losses import discriminator_loss, generator_loss

K = 8
CENTRES = torch.stack([torch.cos(2 * math.pi * torch.arange(K) / K),
                       torch.sin(2 * math.pi * torch.arange(K) / K)], dim=1)  # (K, 2)

SHAPES = [(2,), (10,), (4, 4, 4), (4, 8, 8), (1, 8, 8), (3, 32, 32)]


def mixture(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 2) points of the 8-cluster mixture (unit circle, std 0.05) and their (n,) labels."""
    labels = torch.randint(0, K, (n,), generator=generator)
    return CENTRES[labels] + 0.05 * torch.randn(n, 2, generator=generator), labels


def tiny(**kw) -> GANConfig:
    return GANConfig(noise_dim=4, width=8, depth=2, **kw)


# --- config, shapes, conditioning -------------------------------------------------------------

def test_config_validation():
    with pytest.raises(ValueError, match="noise_dim"):
        GANConfig(noise_dim=0)
    with pytest.raises(ValueError, match="loss"):
        GANConfig(loss="wasserstein")
    for bad in [(4, 8, 4), (4, 12, 12), (4, 2, 2), (4, 64, 64), (2, 2), ()]:
        with pytest.raises(ValueError, match="shape"):
            GANGenerator(tiny(), bad)
        with pytest.raises(ValueError, match="shape"):
            GANDiscriminator(tiny(), bad)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("num_classes", [0, 3])
def test_shapes(shape, num_classes):
    cfg = tiny()
    gen, disc = GANGenerator(cfg, shape, num_classes), GANDiscriminator(cfg, shape, num_classes)
    cond = torch.tensor([0, 2, 1]) if num_classes else None
    x = gen(torch.randn(3, cfg.noise_dim), cond)
    assert x.shape == (3, *shape)
    logits = disc(x, cond)
    assert logits.shape == (3,) and torch.isfinite(logits).all()
    assert gen.sample(5, None if cond is None else torch.zeros(5, dtype=torch.long)).shape == (
        5, *shape)
    assert gen.num_parameters() == sum(p.numel() for p in gen.parameters()) > 0


def test_bounded_output_and_unbounded_latents():
    latent = GANGenerator(tiny(), (1, 8, 8))
    with torch.no_grad():
        latent.net[-1].weight.mul_(100.0)  # an output well beyond [-1, 1]
    bounded = GANGenerator(tiny(bounded=True), (1, 8, 8))
    bounded.load_state_dict(latent.state_dict())
    noise = torch.randn(8, 4)
    assert latent(noise).abs().max() > 1  # latents: no output nonlinearity
    torch.testing.assert_close(bounded(noise), torch.tanh(latent(noise)))


def test_labels_are_checked():
    cfg = tiny()
    gen, disc = GANGenerator(cfg, (4, 4, 4), 3), GANDiscriminator(cfg, (4, 4, 4), 3)
    noise, x = torch.randn(2, 4), torch.randn(2, 4, 4, 4)
    for bad in (torch.tensor([0, 3]), torch.tensor([-1, 0])):
        with pytest.raises(ValueError, match="cond"):
            gen(noise, bad)
        with pytest.raises(ValueError, match="cond"):
            disc(x, bad)
    with pytest.raises(ValueError, match="required"):
        gen(noise, None)
    with pytest.raises(ValueError, match="unconditional"):
        GANGenerator(tiny(), (2,))(noise, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="int64"):
        gen(noise, torch.tensor([0.0, 1.0]))


def test_labels_change_the_sample_and_the_logit():
    cfg = tiny()
    gen, disc = GANGenerator(cfg, (2,), 3), GANDiscriminator(cfg, (2,), 3)
    noise, x = torch.randn(4, 4), torch.randn(4, 2)
    zeros, ones = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    assert not torch.allclose(gen(noise, zeros), gen(noise, ones))
    # projection discriminator: the label enters only as <embed(y), phi(x)>
    phi = disc.features(x)
    torch.testing.assert_close(disc(x, ones) - disc.logit(phi).squeeze(1),
                               (disc.classes.weight[1] * phi).sum(1))


def test_sample_is_deterministic_given_a_generator():
    gen = GANGenerator(tiny(), (4, 8, 8), 2)
    cond = torch.tensor([0, 1, 1])
    a = gen.sample(3, cond, generator=torch.Generator().manual_seed(0))
    b = gen.sample(3, cond, generator=torch.Generator().manual_seed(0))
    c = gen.sample(3, cond, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert not a.requires_grad


def test_dcgan_init():
    gen = GANGenerator(GANConfig(width=64, noise_dim=64), (4, 16, 16))
    for m in gen.modules():
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear) and m.weight.numel() > 10_000:
            assert m.weight.std().item() == pytest.approx(0.02, rel=0.1)
            assert m.bias is None or (m.bias == 0).all()


def test_dtype_follows_inputs_and_bf16_autocast():
    shape = (4, 8, 8)
    gen = GANGenerator(tiny(), shape, 2).double()
    disc = GANDiscriminator(tiny(), shape, 2).double()
    cond = torch.tensor([0, 1])
    x = gen.sample(2, cond)
    assert x.dtype == torch.float64 and disc(x, cond).dtype == torch.float64
    gen, disc = gen.float(), disc.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = gen(torch.randn(2, 4), cond)
        logits = disc(x, cond)
        d, g = discriminator_loss(logits, logits), generator_loss(logits)
    assert x.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    assert d.dtype == g.dtype == torch.float32
    g.backward()
    assert all(torch.isfinite(p.grad).all() for p in gen.parameters())


def test_gan_does_not_import_tokenizers():
    # DESIGN §5: generators and tokenizers are both layer 1 and must not import each other
    tree = ast.parse(inspect.getsource(gan_module))
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert imported and not any("tokenizers" in m for m in imported)


# --- losses (moved from tokenizers/discriminator.py to nn/gan_losses.py) ----------------------

def test_losses_keep_their_values_after_the_move():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.0, -1.0])
    # relu(1 - real) = [0, 0.5, 2] -> mean 2.5 / 3; relu(1 + fake) = [0, 1, 0] -> mean 1 / 3
    torch.testing.assert_close(gan_losses.hinge_d_loss(real, fake),
                               torch.tensor(0.5 * (2.5 / 3 + 1 / 3)))
    torch.testing.assert_close(gan_losses.hinge_g_loss(fake), torch.tensor(1.0))
    torch.testing.assert_close(discriminator_loss(real, fake, "hinge"),
                               torch.tensor(0.5 * (2.5 / 3 + 1 / 3)))
    sp = torch.nn.functional.softplus
    torch.testing.assert_close(discriminator_loss(real, fake, "non_saturating"),
                               0.5 * (sp(-real).mean() + sp(fake).mean()))
    torch.testing.assert_close(generator_loss(fake, "non_saturating"), sp(-fake).mean())
    # the old import path still serves the very same functions
    for name in ("GAN_LOSSES", "discriminator_loss", "generator_loss", "hinge_d_loss",
                 "hinge_g_loss", "non_saturating_d_loss", "non_saturating_g_loss"):
        assert getattr(tokenizer_discriminator, name) is getattr(gan_losses, name)


# --- real training runs on the 2-D mixture ----------------------------------------------------

def train_toy_gan(num_classes: int, steps: int = 3000, seed: int = 0) -> GANGenerator:
    """Alternating hinge-loss D and G steps on the 8-cluster mixture; returns the generator.

    Settings (width 128, depth 3, noise 8, lr 1e-3, batch 256, 3000 steps) covered all 8 modes
    with >= 9% of samples each and >= 88% of samples within 0.2 of a centre for seeds 0-3, 5
    and 6 when chosen. Batch 128 missed modes for seed 3 (1 of 5 seeds), width 64 or 2000
    steps were unreliable too: the unconditional toy GAN is fickle, the seed is fixed.
    """
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    cfg = GANConfig(noise_dim=8, width=128, depth=3, loss="hinge")
    gen = GANGenerator(cfg, (2,), num_classes)
    disc = GANDiscriminator(cfg, (2,), num_classes)
    opt_g = torch.optim.Adam(gen.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-3, betas=(0.5, 0.999))
    batch = 256
    for _ in range(steps):
        real, labels = mixture(batch, g)
        cond = labels if num_classes else None
        fake = gen(torch.randn(batch, cfg.noise_dim, generator=g), cond)  # (B, 2)
        # discriminator step: real and detached fake in one call (no batch statistics in D)
        both = disc(torch.cat([real, fake.detach()]), None if cond is None else cond.repeat(2))
        logits_real, logits_fake = both.chunk(2)
        d_loss = discriminator_loss(logits_real, logits_fake, cfg.loss)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        # generator step against the updated discriminator
        g_loss = generator_loss(disc(fake, cond), cfg.loss)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
    return gen


@pytest.mark.slow
def test_unconditional_gan_covers_every_mode():
    gen = train_toy_gan(num_classes=0)
    samples = gen.sample(2000, generator=torch.Generator().manual_seed(123))  # (N, 2)
    dist = torch.cdist(samples, CENTRES)  # (N, K)
    share = torch.bincount(dist.argmin(1), minlength=K) / len(samples)
    assert share.min() >= 0.05, f"a mode is missed or starved: {share.tolist()}"
    near = (dist.min(1).values < 0.2).float().mean()  # 0.2 = 4 std of a cluster
    assert near > 0.7, f"only {near:.2f} of the samples lie near a centre"


@pytest.mark.slow
def test_conditional_gan_puts_each_label_at_its_centre():
    gen = train_toy_gan(num_classes=K, steps=1500)  # labels make modes easy: seeds 0-2 hit 100%
    labels = torch.arange(K).repeat_interleave(250)  # (2000,)
    samples = gen.sample(len(labels), labels, generator=torch.Generator().manual_seed(123))
    nearest = torch.cdist(samples, CENTRES).argmin(1)
    per_label = torch.stack([(nearest[labels == k] == k).float().mean() for k in range(K)])
    assert per_label.min() > 0.7, f"share at the label's centre: {per_label.tolist()}"
