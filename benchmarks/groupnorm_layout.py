"""What `latentlab.nn.blocks.GroupNorm` buys over `nn.GroupNorm` in the engine's default setting.

    python benchmarks/groupnorm_layout.py [--quick]

Under bf16 autocast with channels_last tensors (the engine's default), PyTorch's CPU GroupNorm
kernels are slow; blocks.GroupNorm runs the norm on an NCHW copy instead. This times the
training step of each case of `training_step.CASES` with blocks.GroupNorm and with its modules
turned back into stock nn.GroupNorm (same weights), in turns, and checks that fp32 outputs agree
bit for bit (the change must leave fp32 numerics alone).
"""

from __future__ import annotations

import torch
from common import Figure, OtherLoad, median_times, parse_args, print_figures
from torch import nn
from training_step import CASES, QUICK_CASES, BareStep

from latentlab.nn.blocks import GroupNorm


def stock_group_norms(step: BareStep) -> BareStep:
    """`step` with every blocks.GroupNorm turned into a plain nn.GroupNorm, in place."""
    for module in step.objective.modules():
        if isinstance(module, GroupNorm):
            # same parameters and buffers: only forward changes, to nn.GroupNorm's own
            module.__class__ = nn.GroupNorm
    return step


def check_fp32_unchanged(step: BareStep) -> None:
    """Raise if blocks.GroupNorm changes fp32 outputs, in NCHW or channels_last."""
    norm = next(m for m in step.objective.modules() if isinstance(m, GroupNorm))
    stock = nn.GroupNorm(norm.num_groups, norm.num_channels, norm.eps)
    stock.load_state_dict(norm.state_dict())
    x = torch.randn(4, norm.num_channels, 8, 8)
    for fmt in (torch.contiguous_format, torch.channels_last):
        y = x.contiguous(memory_format=fmt)
        assert torch.equal(norm(y), stock(y)), f"fp32 GroupNorm output changed for {fmt}"


def main() -> None:
    args = parse_args(__doc__)
    repeats, warmup, min_sample_s = (1, 1, 0.05) if args.quick else (9, 2, 0.3)
    cases = QUICK_CASES if args.quick else CASES
    steps = {}
    for name, case in cases.items():
        steps[name, "blocks"] = BareStep(case, "bf16")
        steps[name, "stock"] = stock_group_norms(BareStep(case, "bf16"))
    check_fp32_unchanged(steps["digits_ae", "blocks"])
    with OtherLoad() as load:
        seconds = median_times(steps, repeats, warmup, min_sample_s)
    figures = [Figure(f"{name}_bf16_groupnorm_speedup",
                      seconds[name, "stock"] / seconds[name, "blocks"], "x") for name in cases]
    print_figures(figures + [Figure("other_load", 100 * load.fraction, "%")])


if __name__ == "__main__":
    main()
