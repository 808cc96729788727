"""Finite scalar quantisation: the grid, the codebook size and exact mixed-radix indices."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from latentlab.tokenizers.bottlenecks import FiniteScalarQuantizer, FSQConfig

LEVELS = (4, 3, 5, 2)  # even and odd, and the smallest level


def fsq(levels=LEVELS) -> FiniteScalarQuantizer:
    return FiniteScalarQuantizer(len(levels), FSQConfig(levels=levels)).eval()


def grid(level: int) -> list[float]:
    """The codes of one channel: (d - L // 2) / (L // 2) for digits d in [0, L)."""
    return [(d - level // 2) / (level // 2) for d in range(level)]


def test_codebook_is_the_product_of_levels_and_every_index_has_its_own_code():
    q = fsq()
    k = math.prod(LEVELS)
    assert q.codebook_size == k == 120
    indices = torch.arange(k)[:, None]  # (B, S) = (120, 1)
    codes = q.indices_to_codes(indices)  # (120, C, 1)
    assert codes.shape == (k, len(LEVELS), 1)
    assert len(torch.unique(codes[..., 0], dim=0)) == k  # all distinct
    assert torch.equal(q.codes_to_indices(codes), indices)
    # the codes are exactly the grid: every combination of per-channel values, once
    expected = {tuple(c) for c in itertools.product(*(grid(level) for level in LEVELS))}
    assert {tuple(c) for c in codes[..., 0].tolist()} == expected


def test_forward_lands_on_the_grid_and_reaches_every_level():
    q = fsq()
    z = torch.linspace(-6, 6, 1001)[:, None].expand(-1, len(LEVELS))  # (B, C), sweeps each channel
    out = q(z)
    assert out.indices.min() >= 0 and out.indices.max() < q.codebook_size
    for c, level in enumerate(LEVELS):
        assert sorted(set(out.latent[:, c].tolist())) == grid(level)
    assert out.latent.abs().max() <= 1
    assert out.loss == 0


def test_zero_maps_to_the_zero_code_for_even_and_odd_levels():
    # the half-offset and its atanh shift centre even levels too (FSQ reference code)
    out = fsq()(torch.zeros(1, len(LEVELS)))
    assert torch.equal(out.latent, torch.zeros(1, len(LEVELS)))


def test_channel_zero_is_the_least_significant_digit():
    q = fsq()
    digits = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
    codes = (digits - torch.tensor(LEVELS) // 2) / (torch.tensor(LEVELS) // 2)  # (3, C)
    assert q.codes_to_indices(codes).tolist() == [1, 4, 4 * 3 * 5]


def test_gradient_is_that_of_the_bound():
    q = fsq().train()
    z = torch.randn(16, len(LEVELS), requires_grad=True)
    q(z).latent.sum().backward()
    expected = torch.func.grad(lambda z: (q.bound(z) / q.half_width).sum())(z.detach())
    torch.testing.assert_close(z.grad, expected)


@pytest.mark.parametrize("levels, channels, message", [
    ((1, 5), 2, "levels: every level must be >= 2"),
    ((), 0, "levels: needs at least one level"),
    ((8, 5, 5, 5), 3, "levels: 4 levels"),
])
def test_bad_levels_name_the_field(levels, channels, message):
    with pytest.raises(ValueError, match=message):
        FiniteScalarQuantizer(channels, FSQConfig(levels=levels))
