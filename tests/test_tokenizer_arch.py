"""Encoder/decoder architectures: shapes for every factor, layout and dtype; width scaling;
where dropout acts; config errors; and the invariants of the attention block."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from einops import rearrange
from torch import nn

from latentlab.config import ConfigError, field_docs, from_dict
from latentlab.nn.attention import Attention
from latentlab.nn.blocks import ResBlock
from latentlab.tokenizers.conv import (
    ConvConfig,
    ConvDecoder,
    ConvEncoder,
    check_image_size,
)
from latentlab.tokenizers.mlp import MLPConfig, MLPDecoder, MLPEncoder

CL = torch.channels_last
CH_MULT = {1: (1,), 2: (1, 2), 4: (1, 2, 2), 8: (1, 1, 2, 2)}  # by downsampling factor


def n_params(module: nn.Module, kind: type = nn.Module) -> int:
    return sum(p.numel() for m in module.modules() if isinstance(m, kind)
               for p in m.parameters(recurse=False))


# ---- convolutional encoder / decoder


@pytest.mark.parametrize("attention", [False, True])
@pytest.mark.parametrize("f", [1, 2, 4, 8])
def test_conv_shapes_for_every_factor_layout_and_dtype(f, attention):
    torch.manual_seed(0)
    cfg = ConvConfig(channels=8, ch_mult=CH_MULT[f], attention=attention, heads=2)
    assert cfg.factor == f
    enc, dec = ConvEncoder(cfg, 3, 4), ConvDecoder(cfg, 4, 3)
    size = max(16, 4 * f)  # latents of at least 4x4
    x = torch.randn(2, 3, size, size)
    z = enc(x)
    assert z.shape == (2, 4, size // f, size // f)
    ref = dec(z)
    assert ref.shape == x.shape

    out = dec(enc(x.contiguous(memory_format=CL)))
    assert out.is_contiguous(memory_format=CL)  # no layer falls back to NCHW
    # same maths, other kernels: fp32 rounding differences only
    torch.testing.assert_close(out, ref, atol=5e-4 * ref.abs().max().item(), rtol=1e-3)

    for fmt in (torch.contiguous_format, CL):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = dec(enc(x.contiguous(memory_format=fmt)))
        assert out.dtype == torch.bfloat16 and out.shape == x.shape
        # bf16 keeps ~3 significant digits; ~20 layers of it leave a few percent
        assert (out.float() - ref).norm() < 0.08 * ref.norm()


def test_width_multiplier_scales_conv_params_quadratically_and_keeps_groupnorm():
    cfg = ConvConfig(channels=32, ch_mult=(1, 2), attention=True)
    z = torch.randn(2, 4, 4, 4)
    full = ConvDecoder(cfg, 4, 1)
    half = ConvDecoder(dataclasses.replace(cfg, width=0.5), 4, 1)
    ratio = n_params(half, nn.Conv2d) / n_params(full, nn.Conv2d)
    assert 0.22 < ratio < 0.3  # conv weights scale with cin * cout: ~1/4
    for m in half.modules():
        if isinstance(m, nn.GroupNorm):
            assert m.num_channels % m.num_groups == 0 and m.num_groups >= 8
    assert half(z).shape == (2, 1, 8, 8)
    # the constructor's width overrides the config's: same layers as a width-0.5 config
    override = ConvDecoder(cfg, 4, 1, width=0.5)
    assert ([p.shape for p in override.parameters()] == [p.shape for p in half.parameters()])
    with pytest.raises(ValueError, match="^width:"):
        ConvDecoder(cfg, 4, 1, width=0.0)


def test_scaled_widths_round_to_multiples_of_8():
    assert ConvConfig(channels=24, ch_mult=(1, 2, 3), width=0.5).level_widths() == [16, 24, 32]
    assert ConvConfig(channels=8, width=0.25).level_widths() == [8, 8]  # never below 8
    assert ConvConfig(channels=12, ch_mult=(1, 3)).level_widths() == [12, 36]  # width 1: as is


def test_dropout_acts_only_in_the_decoder_and_only_in_train_mode():
    torch.manual_seed(0)
    cfg = ConvConfig(channels=8, attention=True, dropout=0.3, channel_dropout=0.3)
    enc, dec = ConvEncoder(cfg, 1, 2).train(), ConvDecoder(cfg, 2, 1).train()
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(enc(x), enc(x))
    z = enc(x).detach()
    assert not torch.equal(dec(z), dec(z))
    dec.eval()
    assert torch.equal(dec(z), dec(z))
    # every decoder ResBlock, mid block included, drops elements and whole channels
    blocks = [m for m in dec.modules() if isinstance(m, ResBlock)]
    assert len(blocks) == 4  # 2 in the mid block, 1 per level
    for block in blocks:
        assert [(type(m), m.p) for m in block.drop] == [(nn.Dropout, 0.3), (nn.Dropout2d, 0.3)]
    assert not any(isinstance(m, (nn.Dropout, nn.Dropout2d)) and m.p > 0
                   for m in enc.modules())


@pytest.mark.parametrize("kwargs, field", [
    (dict(ch_mult=(1, 2, 2, 2, 2)), "ch_mult"),  # f = 16
    (dict(ch_mult=()), "ch_mult"),
    (dict(width=0.0), "width"),
    (dict(width=-0.5), "width"),
    (dict(channel_dropout=1.0), "channel_dropout"),
    (dict(dropout=-0.1), "dropout"),
    (dict(blocks=0), "blocks"),
    (dict(attention=True, heads=3), "heads"),  # 64 channels at the lowest level
])
def test_bad_conv_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}: "):
        ConvConfig(**kwargs)


def test_image_size_not_divisible_by_the_factor_names_ch_mult():
    cfg = ConvConfig(channels=8, ch_mult=(1, 2, 2, 2))
    message = "ch_mult: downsampling factor 8 does not divide the image size 12x12"
    with pytest.raises(ValueError, match=message):
        check_image_size(cfg, (1, 12, 12))
    with pytest.raises(ValueError, match=message):
        ConvEncoder(cfg, 1, 2)(torch.randn(1, 1, 12, 12))
    check_image_size(cfg, (2, 1, 16, 24))


def test_decoder_last_layer_is_the_final_conv_weight():
    dec = ConvDecoder(ConvConfig(channels=8), 2, 3)
    assert dec.last_layer is dec.conv_out.weight and dec.last_layer.shape[0] == 3


def test_configs_load_from_yaml_data_and_document_every_field():
    cfg = from_dict(ConvConfig, {"ch_mult": [1, 2, 2], "width": 1})
    assert cfg.ch_mult == (1, 2, 2) and cfg.factor == 4
    with pytest.raises(ConfigError, match="ch_mult: downsampling factor 16"):
        from_dict(ConvConfig, {"ch_mult": [1, 1, 1, 1, 1]})
    for cls in (ConvConfig, MLPConfig):
        assert set(field_docs(cls)) == {f.name for f in dataclasses.fields(cls)}


# ---- attention


def permute_positions(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    h = x.shape[-2]
    return rearrange(rearrange(x, "b c h w -> b c (h w)")[..., perm], "b c (h w) -> b c h w",
                     h=h)


def test_attention_starts_as_the_identity_and_leaves_it_after_a_step():
    torch.manual_seed(0)
    attn = Attention(16, heads=2)
    x = torch.randn(2, 16, 4, 4)
    assert torch.equal(attn(x), x)  # zero-init output projection
    opt = torch.optim.SGD(attn.parameters(), lr=0.1)
    (attn(x) - torch.randn_like(x)).square().mean().backward()
    opt.step()
    assert not torch.allclose(attn(x), x, atol=1e-4)


@pytest.mark.parametrize("heads", [1, 4])
def test_attention_matches_softmax_attention_written_out(heads):
    torch.manual_seed(0)
    attn = Attention(16, heads=heads)
    nn.init.normal_(attn.proj.weight, std=0.2)
    x = torch.randn(2, 16, 3, 5)
    qkv = attn.qkv(attn.norm(x)).flatten(2)  # (B, 3C, HW)
    q, k, v = (t.reshape(2, heads, 16 // heads, 15) for t in qkv.chunk(3, dim=1))  # (B, N, D, HW)
    scores = torch.einsum("bndi,bndj->bnij", q, k) / (16 // heads) ** 0.5
    out = torch.einsum("bnij,bndj->bndi", scores.softmax(-1), v).reshape(2, 16, 3, 5)
    torch.testing.assert_close(attn(x), x + attn.proj(out))


def test_attention_is_equivariant_to_permuting_positions():
    torch.manual_seed(0)
    attn = Attention(16, heads=4)
    nn.init.normal_(attn.proj.weight, std=0.2)  # away from the identity
    x = torch.randn(2, 16, 4, 6)
    perm = torch.randperm(24)
    y = attn(x)
    assert not torch.allclose(y, x)
    torch.testing.assert_close(attn(permute_positions(x, perm)), permute_positions(y, perm))


def test_attention_keeps_the_layout_under_bf16_autocast():
    torch.manual_seed(0)
    attn = Attention(16, heads=2)
    nn.init.normal_(attn.proj.weight, std=0.2)
    x = torch.randn(2, 16, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = attn(x.contiguous(memory_format=CL))
    assert y.is_contiguous(memory_format=CL)
    torch.testing.assert_close(y.float(), attn(x), atol=0.05, rtol=0.05)
    with pytest.raises(ValueError, match="^heads: "):
        Attention(16, heads=3)


# ---- fully connected encoder / decoder


def linear_shapes(module: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


def test_mlp_shapes_and_the_dae_toy_layer_widths():
    cfg = MLPConfig.uniform(64, 128)  # the DAE table's "hidden dim (64, 128)", 3 layers each
    assert cfg.encoder_hidden == (64, 64) and cfg.decoder_hidden == (128, 128)
    enc, dec = MLPEncoder(cfg, 10, 4), MLPDecoder(cfg, 2, 10)
    assert linear_shapes(enc) == [(10, 64), (64, 64), (64, 4)]
    assert linear_shapes(dec) == [(2, 128), (128, 128), (128, 10)]
    assert enc(torch.randn(5, 10)).shape == (5, 4)
    assert dec(torch.randn(5, 2)).shape == (5, 10)
    assert dec.last_layer is dec.net[-1].weight and dec.last_layer.shape == (10, 128)
    assert linear_shapes(MLPDecoder(cfg, 2, 10, width=0.5)) == [(2, 64), (64, 64), (64, 10)]
    # depths differ too: one entry per hidden layer
    cfg = MLPConfig(encoder_hidden=(32,), decoder_hidden=(16, 32, 64))
    assert linear_shapes(MLPEncoder(cfg, 10, 4)) == [(10, 32), (32, 4)]
    assert len(linear_shapes(MLPDecoder(cfg, 2, 10))) == 4


def test_mlp_dropout_only_in_the_decoder_and_only_in_train_mode():
    torch.manual_seed(0)
    cfg = MLPConfig(dropout=0.5, activation="gelu")
    enc, dec = MLPEncoder(cfg, 10, 4).train(), MLPDecoder(cfg, 4, 10).train()
    x = torch.randn(8, 10)
    assert torch.equal(enc(x), enc(x))
    assert not torch.equal(dec(enc(x)), dec(enc(x)))
    dec.eval()
    assert torch.equal(dec(enc(x)), dec(enc(x)))


@pytest.mark.parametrize("kwargs, field", [
    (dict(encoder_hidden=(64, 0)), "encoder_hidden"),
    (dict(decoder_hidden=(-1,)), "decoder_hidden"),
    (dict(activation="tanh"), "activation"),
    (dict(dropout=1.0), "dropout"),
])
def test_bad_mlp_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}: "):
        MLPConfig(**kwargs)
