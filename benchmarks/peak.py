"""This machine's fp32 and bf16 matmul peak, the ceiling the other benchmarks divide by.

    python benchmarks/peak.py [--quick]

Prints the GFLOP/s of each backend and size tried (`common.MATMUL_BACKENDS`), then the
figures: the best of them per dtype (what `common.measure_peak` returns) and their ratio, the
most bf16 autocast can speed up matmul-bound training here. `other_load` is the share of the CPUs
that other processes used meanwhile: figures taken while it is well above zero are low.
"""

from __future__ import annotations

import torch
from common import (
    PEAK_SIZES,
    QUICK_PEAK_SIZES,
    Figure,
    OtherLoad,
    matmul_sweep,
    parse_args,
    print_figures,
)


def best_of_sweep(dtype: torch.dtype, sizes: tuple[int, ...], repeats: int) -> float:
    """Print the GFLOP/s of each backend and size; return the best."""
    sweep = matmul_sweep(dtype, sizes, repeats)
    for (backend, n), gflops in sweep.items():
        name = str(dtype).removeprefix("torch.")
        print(f"  {name:>8} {backend:>7} {n:5d}^3: {gflops:8.1f} GFLOP/s")
    return max(sweep.values())


def main() -> None:
    args = parse_args(__doc__)
    sizes, repeats = (QUICK_PEAK_SIZES, 3) if args.quick else (PEAK_SIZES, 9)
    with OtherLoad() as load:
        fp32 = best_of_sweep(torch.float32, sizes, repeats)
        bf16 = best_of_sweep(torch.bfloat16, sizes, repeats)
    print_figures([Figure("fp32_matmul_peak", fp32, "GFLOP/s"),
                   Figure("bf16_matmul_peak", bf16, "GFLOP/s"),
                   Figure("bf16_over_fp32", bf16 / fp32, "x"),
                   Figure("other_load", 100 * load.fraction, "%")])


if __name__ == "__main__":
    main()
