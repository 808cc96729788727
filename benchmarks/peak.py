"""This machine's fp32 and bf16 matmul peak, the ceiling the other benchmarks divide by.

    python benchmarks/peak.py [--quick]

Prints the GFLOP/s of each size tried, then the figures: the best size per dtype (what
`common.measure_peak` returns) and their ratio, the most bf16 autocast can speed up
matmul-bound training here. `other_load` is the share of the CPUs other processes used meanwhile:
figures taken while it is well above zero are low.
"""

from __future__ import annotations

import torch
from common import (
    PEAK_SIZES,
    QUICK_PEAK_SIZES,
    Figure,
    OtherLoad,
    make_parser,
    matmul_sweep,
    print_figures,
)


def best_of_sweep(dtype: torch.dtype, sizes: tuple[int, ...], repeats: int) -> float:
    """Print the GFLOP/s of each size and return the best."""
    sweep = matmul_sweep(dtype, sizes, repeats)
    for n, gflops in sweep.items():
        print(f"  {str(dtype).removeprefix('torch.'):>8} {n:5d}^3: {gflops:8.1f} GFLOP/s")
    return max(sweep.values())


def main() -> None:
    args = make_parser(__doc__.splitlines()[0]).parse_args()
    sizes, repeats = (QUICK_PEAK_SIZES, 3) if args.quick else (PEAK_SIZES, 9)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    with OtherLoad() as load:
        fp32 = best_of_sweep(torch.float32, sizes, repeats)
        bf16 = best_of_sweep(torch.bfloat16, sizes, repeats)
    print_figures([Figure("fp32_matmul_peak", fp32, "GFLOP/s"),
                   Figure("bf16_matmul_peak", bf16, "GFLOP/s"),
                   Figure("bf16_over_fp32", bf16 / fp32, "x"),
                   Figure("other_load", 100 * load.fraction, "%")])


if __name__ == "__main__":
    main()
