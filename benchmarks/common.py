"""Helpers every benchmark shares: timing, this machine's matmul peak, and the figures printer.

A benchmark reports ratios measured within one run (achieved FLOP/s over the peak measured by
`measure_peak` a moment earlier, bf16 time over fp32 time), so its figures mean the same thing on
a loaded laptop and an idle server. It ends with its figures, one per line, as `name: value unit`.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

PEAK_SIZES = (1024, 2048, 4096)
"""Square matmul sizes tried for the peak; the best of them is the peak."""
QUICK_PEAK_SIZES = (1024,)
MATMUL_BACKENDS = ("mm", "conv1x1")
"""Two routes to a square product: `torch.mm` (MKL's sgemm in fp32, oneDNN in bf16) and a 1x1
convolution (oneDNN in both, as the models' convolutions are). On CPUs that MKL does not favour
(AMD) oneDNN's fp32 kernel is much the faster, and an fp32 peak from `torch.mm` alone would put
convolutions above 100 % of it."""


@dataclass(frozen=True)
class Figure:
    """One reported figure, printed as `name: value unit`."""

    name: str
    value: float
    unit: str

    def line(self) -> str:
        # enough digits to compare runs, not so many that noise looks like signal
        v = self.value
        decimals = 1 if abs(v) >= 100 else 2 if abs(v) >= 1 else 3
        return f"{self.name}: {v:.{decimals}f} {self.unit}".rstrip()  # unitless: no space


def print_figures(figures: Sequence[Figure]) -> None:
    """Print the figures last, one per line, for people and for scripts that grep them."""
    for figure in figures:
        print(figure.line(), flush=True)


def machine_description() -> str:
    """One line saying what the figures were measured on."""
    model = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f
                      if line.startswith("model name")), model)
    isa = torch.backends.cpu.get_cpu_capability()
    return (f"{model}, {os.cpu_count()} CPUs, torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads, {isa} kernels")


def parse_args(doc: str, profile: str | None = None) -> argparse.Namespace:
    """The command line every benchmark takes (`--quick` for a smoke run of a few seconds, and
    `--profile` where the script offers one, `profile` being its help); prints the machine."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a few seconds: checks the script runs; figures are noisy")
    if profile:
        parser.add_argument("--profile", action="store_true", help=profile)
    args = parser.parse_args()
    print(machine_description())
    return args


def median_times(fns: dict[Hashable, Callable[[], object]], repeats: int, warmup: int = 1,
                 min_sample_s: float = 0.0) -> dict[Hashable, float]:
    """Median wall-clock seconds per call of each function, keyed like `fns`.

    The functions are timed in turns (one sample of each per round), so that a burst of load
    from another process lands on all of them alike and their ratios stay fair.

    Args:
        fns: the work to time; each must finish its work before returning (true on the CPU).
        repeats: timed samples of each; the median resists the odd slow one.
        warmup: untimed calls of each first, so allocator growth and oneDNN's kernel selection
            (made on first use of each shape) are not timed.
        min_sample_s: a sample runs a function this long at least (calls per sample are set from
            the last warmup call), so that samples of very short calls outlast timer noise.
    """
    number = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            start = time.perf_counter()
            fn()
            once = time.perf_counter() - start
        number[name] = max(1, math.ceil(min_sample_s / max(once, 1e-9))) if warmup else 1
    samples: dict[Hashable, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(number[name]):
                fn()
            samples[name].append((time.perf_counter() - start) / number[name])
    return {name: statistics.median(s) for name, s in samples.items()}


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1,
                min_sample_s: float = 0.0) -> float:
    """Median wall-clock seconds per call of `fn` (see `median_times`)."""
    return median_times({"fn": fn}, repeats, warmup, min_sample_s)["fn"]


class OtherLoad:
    """Measures how busy other processes kept this machine's CPUs while the block ran.

    A benchmark on a shared machine is only as good as its quiet: this turns "was anything else
    running?" into a number. Reads Linux's /proc/stat; elsewhere `fraction` stays NaN.

    Attributes:
        fraction: CPU time of other processes (and time stolen by the hypervisor) over the
            block's wall time times the CPU count; 0 on a quiet machine.
    """

    def __init__(self):
        self.fraction = math.nan

    @staticmethod
    def _busy_seconds() -> float | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except OSError:
            return None
        idle = fields[3] + fields[4]  # idle and iowait; the rest is someone's work
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> OtherLoad:
        self._busy, self._own = self._busy_seconds(), time.process_time()
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        busy = self._busy_seconds()
        if busy is None or self._busy is None:
            return
        others = (busy - self._busy) - (time.process_time() - self._own)
        wall = time.perf_counter() - self._wall
        self.fraction = max(others, 0.0) / (wall * (os.cpu_count() or 1))


def _square_product(n: int, dtype: torch.dtype, backend: str) -> Callable[[], torch.Tensor]:
    """A (n, n) @ (n, n) product in `dtype` computed by `backend`, ready to call."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(dtype)
    b = torch.randn(n, n, generator=g).to(dtype)
    if backend == "mm":
        return lambda: torch.mm(a, b)
    # the same product as a 1x1 convolution: (1, K=n, M=n, 1) by (N=n, K=n, 1, 1)
    x, w = a.T.reshape(1, n, n, 1).contiguous(), b.T.reshape(n, n, 1, 1).contiguous()
    return lambda: F.conv2d(x, w)


def matmul_gflops(n: int, dtype: torch.dtype, backend: str = "mm", repeats: int = 5) -> float:
    """Achieved GFLOP/s of one (n, n) @ (n, n) product (2 n^3 FLOPs); see `MATMUL_BACKENDS`."""
    seconds = median_time(_square_product(n, dtype, backend), repeats, warmup=2)
    return 2 * n**3 / seconds / 1e9


def matmul_sweep(dtype: torch.dtype, sizes: Sequence[int] = PEAK_SIZES, repeats: int = 5
                 ) -> dict[tuple[str, int], float]:
    """Achieved GFLOP/s of a square matmul of each backend and size, keyed (backend, size)."""
    return {(backend, n): matmul_gflops(n, dtype, backend, repeats)
            for backend in MATMUL_BACKENDS for n in sizes}


def measure_peak(dtype: torch.dtype, sizes: Sequence[int] = PEAK_SIZES, repeats: int = 5
                 ) -> float:
    """This machine's matmul peak in `dtype`, GFLOP/s: the best square matmul of `sizes`.

    The best of both `MATMUL_BACKENDS`, with torch's default thread count as training has.
    Large square products are the best case of a dense kernel, so this is the ceiling that a
    model's convolutions and matmuls are held to.
    """
    return max(matmul_sweep(dtype, sizes, repeats).values())


def print_top_ops(fn: Callable[[], object], calls: int = 3, top: int = 15) -> None:
    """Print the operators that take the most CPU time (self time) over `calls` calls of `fn`.

    One untimed call first, so that oneDNN's kernel selection and allocator growth are not
    what the table shows.
    """
    fn()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            fn()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top))
