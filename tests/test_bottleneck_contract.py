"""The contract every bottleneck keeps, for image latents (B, C, h, w) and vectors (B, C)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from latentlab.tokenizers.bottlenecks import (
    FSQConfig,
    GumbelConfig,
    IdentityConfig,
    KLConfig,
    LFQConfig,
    VQConfig,
    build_bottleneck,
)

C = 4  # latent channels
CONFIGS = {
    "identity": IdentityConfig(),
    "identity-norm": IdentityConfig(normalize=True),
    "kl": KLConfig(),
    "vq-ema": VQConfig(codebook_size=16),
    "vq-loss": VQConfig(codebook_size=16, update="loss"),
    "vq-cosine": VQConfig(codebook_size=16, cosine=True),
    "lfq": LFQConfig(),
    "fsq": FSQConfig(levels=(4, 3, 5, 2)),
    "gumbel": GumbelConfig(codebook_size=16),
    "gumbel-hard": GumbelConfig(codebook_size=16, hard=True),
}
DISCRETE = [name for name in CONFIGS if CONFIGS[name].kind in ("vq", "lfq", "fsq", "gumbel")]
SPATIAL = {"image": (4, 4), "vector": ()}
B = 32  # more tokens than codes, so k-means makes distinct codes


def build(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_bottleneck(CONFIGS[name], C)


def encoder_output(bottleneck, spatial: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    """(B, in_channels, *S) random encoder output; images in channels_last memory format."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, bottleneck.in_channels, *spatial, generator=g)
    return z.to(memory_format=torch.channels_last) if spatial else z


def warmed(name: str, spatial: tuple[int, ...], seed: int = 0):
    """A bottleneck after one training step (codebooks initialised, statistics updated), in eval
    mode."""
    bottleneck = build(name, seed)
    bottleneck.train()(encoder_output(bottleneck, spatial, seed=7))
    return bottleneck.eval()


names = pytest.mark.parametrize("name", list(CONFIGS))
discrete = pytest.mark.parametrize("name", DISCRETE)
spatials = pytest.mark.parametrize("spatial", list(SPATIAL.values()), ids=list(SPATIAL))


@names
@spatials
def test_shapes_loss_and_stats(name, spatial):
    bottleneck = build(name).train()
    out = bottleneck(encoder_output(bottleneck, spatial))
    assert out.latent.shape == (B, C, *spatial)
    if bottleneck.discrete:
        assert out.indices.shape == (B, *spatial) and out.indices.dtype == torch.int64
    else:
        assert out.indices is None
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.stats, "every bottleneck reports something"
    for key, value in out.stats.items():
        assert value.ndim == 0 and not value.requires_grad and torch.isfinite(value), key


@names
@spatials
def test_gradient_reaches_the_encoder(name, spatial):
    bottleneck = build(name).train()
    z = encoder_output(bottleneck, spatial).requires_grad_()
    out = bottleneck(z)
    weights = torch.randn(out.latent.shape, generator=torch.Generator().manual_seed(3))
    (out.latent * weights).sum().backward()  # the decoder's path only, not the auxiliary loss
    assert torch.isfinite(z.grad).all()
    assert (z.grad != 0).float().mean() > 0.5


@names
@spatials
def test_eval_is_deterministic(name, spatial):
    bottleneck = warmed(name, spatial)
    z = encoder_output(bottleneck, spatial)
    first, second = bottleneck(z), bottleneck(z)
    assert torch.equal(first.latent, second.latent)
    assert torch.equal(first.loss, second.loss)
    if bottleneck.discrete:
        assert torch.equal(first.indices, second.indices)


@names
def test_memory_format_does_not_matter(name):
    bottleneck = warmed(name, SPATIAL["image"])
    z = encoder_output(bottleneck, SPATIAL["image"])
    assert not z.is_contiguous()
    a, b = bottleneck(z), bottleneck(z.contiguous())
    torch.testing.assert_close(a.latent, b.latent, rtol=0, atol=1e-6)
    if bottleneck.discrete:
        assert torch.equal(a.indices, b.indices)


@names
@spatials
def test_save_load_round_trip(name, spatial, tmp_path):
    bottleneck = warmed(name, spatial)
    save_file({k: v.contiguous() for k, v in bottleneck.state_dict().items()},
              tmp_path / "b.safetensors")
    fresh = build(name, seed=123)  # another random init: loading must overwrite it
    fresh.load_state_dict(load_file(tmp_path / "b.safetensors"))
    fresh.eval()
    z = encoder_output(bottleneck, spatial)
    a, b = bottleneck(z), fresh(z)
    assert torch.equal(a.latent, b.latent)
    assert torch.equal(a.loss, b.loss)
    if bottleneck.discrete:
        assert torch.equal(a.indices, b.indices)


@names
@spatials
def test_autocast_keeps_quantisation_in_fp32(name, spatial):
    bottleneck = warmed(name, spatial)
    z = encoder_output(bottleneck, spatial)
    ref = bottleneck(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = bottleneck(z)  # an fp32 input: autocast would run a matmul in bf16
        out_bf16 = bottleneck(z.bfloat16())  # a bf16 encoder output
    assert torch.isfinite(out.loss) and out.loss.dtype == torch.float32
    if bottleneck.discrete:
        assert torch.equal(out.indices, ref.indices)
        assert out.latent.dtype == torch.float32 and torch.equal(out.latent, ref.latent)
        assert out_bf16.latent.dtype == torch.float32
        assert torch.equal(out_bf16.indices, bottleneck(z.bfloat16().float()).indices)
    else:
        torch.testing.assert_close(out.latent.float(), ref.latent, rtol=0, atol=1e-5)
        torch.testing.assert_close(out_bf16.latent.float(), ref.latent, rtol=0.02, atol=0.05)


@discrete
@spatials
def test_indices_and_codes_map_exactly(name, spatial):
    bottleneck = warmed(name, spatial)
    out = bottleneck(encoder_output(bottleneck, spatial))
    assert out.indices.min() >= 0 and out.indices.max() < bottleneck.codebook_size
    codes = bottleneck.indices_to_codes(out.indices)
    assert codes.shape == out.latent.shape
    assert torch.equal(codes, out.latent)  # bitwise: the latent *is* the code
    assert torch.equal(bottleneck.codes_to_indices(codes), out.indices)
    assert torch.equal(bottleneck.codes_to_indices(out.latent), out.indices)
