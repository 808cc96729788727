"""Lookup-free quantisation: signs, the implicit 2^C codebook, the bit order, the entropy loss."""

from __future__ import annotations

import math

import pytest
import torch

from latentlab.tokenizers.bottlenecks import LFQConfig, LookupFreeQuantizer

C = 5


def lfq(cfg: LFQConfig | None = None) -> LookupFreeQuantizer:
    return LookupFreeQuantizer(C, cfg or LFQConfig()).eval()


def test_codebook_is_every_sign_pattern_once():
    q = lfq()
    assert q.codebook_size == 2**C
    indices = torch.arange(2**C).reshape(4, 8)  # (B, S)
    codes = q.indices_to_codes(indices)  # (4, C, 8)
    assert set(codes.unique().tolist()) == {-1.0, 1.0}
    flat = codes.movedim(1, -1).reshape(-1, C)
    assert len(torch.unique(flat, dim=0)) == 2**C
    assert torch.equal(q.codes_to_indices(codes), indices)


def test_channel_zero_is_the_least_significant_bit():
    q = lfq()
    z = -torch.ones(3, C)
    z[1, 0] = 0.3  # only channel 0 positive
    z[2, C - 1] = 2.0  # only the last channel positive
    assert q(z).indices.tolist() == [0, 1, 2 ** (C - 1)]
    assert q(torch.zeros(1, C)).indices.tolist() == [0]  # 0 counts as negative


def test_latent_is_the_sign_with_a_straight_through_gradient():
    q = lfq().train()
    z = torch.randn(6, C, 2, 2, requires_grad=True)
    out = q(z)
    assert torch.equal(out.latent, torch.where(z > 0, 1.0, -1.0))
    out.latent.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))


def test_entropy_terms():
    q = lfq(LFQConfig(commitment=0.0, entropy_weight=1.0))
    g = torch.Generator().manual_seed(0)
    signs = torch.randint(0, 2, (512, C), generator=g) * 2 - 1
    z = signs * (0.5 + torch.rand(512, C, generator=g))  # |z| in [0.5, 1.5]
    soft, sharp = q(z), q(20 * z)
    # confident tokens: per-sample entropy falls toward 0 as |z| grows
    assert sharp.stats["entropy_sample"] < 0.01 < soft.stats["entropy_sample"]
    # random signs spread over the codebook: batch entropy near its maximum C log 2
    assert sharp.stats["entropy_codebook"] == pytest.approx(C * math.log(2), rel=0.02)
    # all tokens on one code: no codebook entropy, so a worse (higher) loss
    collapsed = q(20 * z.abs())
    assert collapsed.stats["entropy_codebook"] < 0.01
    assert collapsed.loss > sharp.loss + C * math.log(2) - 0.2
    assert torch.allclose(sharp.loss, sharp.stats["entropy_sample"]
                          - sharp.stats["entropy_codebook"])


def test_too_many_channels_is_a_clear_error():
    with pytest.raises(ValueError, match="channels: .* at most 16"):
        LookupFreeQuantizer(17)


@pytest.mark.parametrize("field, value", [("temperature", 0.0), ("entropy_weight", -1.0)])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"^{field}: "):
        LFQConfig(**{field: value})
