"""Building blocks: the layout-aware GroupNorm is nn.GroupNorm up to bf16 rounding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from latentlab.nn.blocks import GroupNorm, ResBlock

CL = torch.channels_last


def pair(channels=64):
    ours = GroupNorm(32, channels, eps=1e-6)
    nn.init.normal_(ours.weight)
    nn.init.normal_(ours.bias)
    ref = nn.GroupNorm(32, channels, eps=1e-6)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


@pytest.mark.parametrize("fmt", [torch.contiguous_format, CL])
def test_fp32_is_bitwise_nn_groupnorm(fmt):
    ours, ref = pair()
    x = torch.randn(4, 64, 8, 8).contiguous(memory_format=fmt)
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    ys = [ours(xs[0]), ref(xs[1])]
    assert torch.equal(ys[0], ys[1])
    for y in ys:
        y.square().sum().backward()
    assert torch.equal(xs[0].grad, xs[1].grad)
    assert torch.equal(ours.weight.grad, ref.weight.grad)


def test_bf16_channels_last_matches_within_rounding_and_keeps_layout():
    ours, ref = pair()
    x = torch.randn(4, 64, 8, 8).to(torch.bfloat16).contiguous(memory_format=CL)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = ours(x1), ref(x2)
    assert y1.dtype == torch.bfloat16 and y1.is_contiguous(memory_format=CL)
    torch.testing.assert_close(y1.float(), y2.float(), rtol=0.02, atol=0.05)
    y1.float().square().sum().backward()
    y2.float().square().sum().backward()
    assert x1.grad.is_contiguous(memory_format=CL)
    scale = x2.grad.float().abs().max().item()
    torch.testing.assert_close(x1.grad.float(), x2.grad.float(), rtol=0.05, atol=0.02 * scale)


def test_res_block_keeps_shape_and_skip():
    block = ResBlock(8, 16, channel_dropout=0.5).eval()
    x = torch.randn(2, 8, 4, 4)
    assert block(x).shape == (2, 16, 4, 4)
    torch.nn.init.zeros_(block.conv2.weight)
    torch.nn.init.zeros_(block.conv2.bias)
    torch.testing.assert_close(block(x), block.skip(x))  # residual branch off: only the skip
