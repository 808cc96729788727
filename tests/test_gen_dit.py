"""DiT denoiser: shapes, zero initialisation, patchify round trip, class conditioning, autocast
and memory formats."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange

from latentlab.generators.denoisers.dit import (
    DIT_PRESETS,
    DiT,
    DiTConfig,
    dit_config,
    patchify,
    sincos_pos_embed_2d,
    unpatchify,
)
from latentlab.generators.guidance import guided

B, C, S = 3, 4, 8  # batch, latent channels, latent side




def tiny(num_classes: int = 0) -> DiT:
    torch.manual_seed(0)
    return DiT(DiTConfig(patch_size=2, width=32, depth=2, heads=2), C, S, num_classes)


def randomise_zero_init(model: DiT) -> DiT:
    """Give the zero-initialised modulations and final layer random weights, as training would,
    so the output depends on every input."""
    torch.manual_seed(1)
    with torch.no_grad():
        for layer in [b.modulation[-1] for b in model.blocks] + [model.final.modulation[-1],
                                                                  model.final.linear]:
            layer.weight.normal_(std=0.1)
            layer.bias.normal_(std=0.1)
    return model


def inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, C, S, S, generator=g), torch.rand(B, generator=g)


def test_config_validation_and_presets():
    with pytest.raises(ValueError, match="patch_size: must divide the latent's side 8"):
        DiT(DiTConfig(patch_size=3), 4, 8)
    with pytest.raises(ValueError, match="heads"):
        DiTConfig(width=100, heads=3)
    with pytest.raises(ValueError, match="num_classes"):
        DiT(DiTConfig(), 4, 8, num_classes=-1)
    with pytest.raises(ValueError, match="preset"):
        dit_config("huge")
    sizes = [DiT(dit_config(name, depth=1), 4, 4).num_parameters for name in DIT_PRESETS]
    assert sizes == sorted(sizes)
    # widths in a geometric series are plain config
    for width in (32, 64, 128):
        assert DiT(DiTConfig(width=width, depth=1, heads=2), 4, 8).cfg.width == width


def test_output_shape_zero_at_init_and_not_after_one_step():
    model = tiny(num_classes=5)
    x, t = inputs()
    out = model(x, t, torch.tensor([0, 4, 5]))
    assert out.shape == (B, C, S, S)
    assert torch.equal(out, torch.zeros_like(out))  # zero-init final layer
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = (model(x, t) - x).square().mean()
    loss.backward()
    opt.step()
    assert model(x, t).abs().amax() > 0


def test_blocks_start_as_the_identity():
    model = tiny()
    tokens, c = torch.randn(B, 16, 32), torch.randn(B, 32)
    for block in model.blocks:
        torch.testing.assert_close(block(tokens, c), tokens, rtol=0, atol=0)


def test_patchify_unpatchify_round_trip_and_patch_conv_order():
    x = torch.randn(2, 3, 8, 8)
    tokens = patchify(x, 2)
    assert tokens.shape == (2, 16, 12)
    assert torch.equal(unpatchify(tokens, 2, 4), x)
    assert torch.equal(patchify(unpatchify(tokens, 2, 4), 2), tokens)
    # the patch conv is a linear map of the same tokens, raster order
    model = tiny()
    conv = model.patch_embed
    weight = rearrange(conv.weight, "d c p q -> d (p q c)")
    xc = torch.randn(B, C, S, S)
    expected = patchify(xc, 2) @ weight.T + conv.bias
    torch.testing.assert_close(rearrange(conv(xc), "b d h w -> b (h w) d"), expected)
    # the forward embeds by that matmul on the conv's own weights, in any memory format
    torch.testing.assert_close(model.embed_patches(xc), expected)
    cl = xc.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(model.embed_patches(cl), expected)


def test_pos_embed_is_a_fixed_buffer():
    model = tiny()
    assert "pos_embed" not in dict(model.named_parameters())
    pe = sincos_pos_embed_2d(32, 4)
    assert pe.shape == (16, 32) and torch.equal(model.pos_embed[0], pe)
    assert len({tuple(row.tolist()) for row in pe}) == 16  # every position distinct


def test_class_conditioning_and_null_class():
    model = randomise_zero_init(tiny(num_classes=5))
    assert model.null_class == 5
    x, t = inputs()
    a = model(x, t, torch.tensor([0, 0, 0]))
    b = model(x, t, torch.tensor([1, 1, 1]))
    assert not torch.allclose(a, b)
    null = model(x, t, torch.full((B,), 5))
    torch.testing.assert_close(model(x, t, None), null)  # None = the null class
    # works under generators.guidance: scale 0 is the null class, 1 the conditional model
    cond = torch.tensor([0, 1, 2])
    torch.testing.assert_close(guided(model, 0.0, model.null_class)(x, t, cond), null)
    torch.testing.assert_close(guided(model, 1.0, model.null_class)(x, t, cond),
                               model(x, t, cond))
    # time matters too
    assert not torch.allclose(model(x, t.flip(0)), model(x, t))


def test_unconditional_model():
    model = randomise_zero_init(tiny())
    x, t = inputs()
    assert model.null_class is None
    assert model(x, t).shape == (B, C, S, S)
    with pytest.raises(ValueError, match="cond"):
        model(x, t, torch.zeros(B, dtype=torch.long))


def test_bf16_autocast_close_to_fp32():
    model = randomise_zero_init(tiny(num_classes=5))
    x, t = inputs()
    cond = torch.tensor([0, 3, 5])
    ref = model(x, t, cond)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x, t, cond)
    assert low.dtype == torch.bfloat16
    err = (low.float() - ref).abs().amax() / ref.abs().amax()
    assert err < 0.05, err


def test_channels_last_input():
    model = randomise_zero_init(tiny())
    x, t = inputs()
    out = model(x.contiguous(memory_format=torch.channels_last), t)
    torch.testing.assert_close(out, model(x, t))


def test_gradients_reach_every_parameter():
    model = randomise_zero_init(tiny(num_classes=5))
    x, t = inputs()
    model(x, t, torch.tensor([0, 1, 5])).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == [], missing
