"""The GPU check: each generator family and the conv tokenizer trained briefly in bf16 on CUDA.

    bash benchmarks/gpu_check.sh [STEPS]

Runs the real CLI (`python -m latentlab`, `--train.device cuda --train.precision bf16`) on the
built-in data, each run for STEPS steps (default 300) into a temporary folder: the conv VQ
tokenizer of configs/shapes32-vq.yaml; flow, ddpm and vpsde with the DiT of
configs/generators/digits-flow-dit.yaml; ar of digits-ar.yaml on that tokenizer's indices; a gan
on digits. A run passes when its loss over the last two logged windows is below that over the
first two. Images/s is the engine's own `items_per_s` (median of the logged windows after the
first, which holds CUDA's warm-up). The fraction of peak is given for the DiT runs, whose FLOPs
per image (forward and backward) `FlopCounterMode` counts; the bf16 peak is the best large
square bf16 matmul, measured first in the same run.
Exits non-zero when a run fails or a loss does not fall.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import Figure, print_figures
from torch.utils.flop_counter import FlopCounterMode

from latentlab.generators.denoisers.dit import DiT, DiTConfig

ROOT = Path(__file__).resolve().parent.parent
GENERATORS = ROOT / "configs" / "generators"
DIGITS_DIT = DiTConfig(patch_size=2, width=128, depth=4, heads=4)  # as digits-flow-dit.yaml
DIGITS = (1, 8, 8)
"""(C, H, W) of a digits image."""

def runs(out: Path) -> dict[str, list[str]]:
    """The CLI arguments of each run, in order: ar models the indices of the tokenizer run."""
    return {
        "tokenizer": ["train-tokenizer", "--config", str(ROOT / "configs" / "shapes32-vq.yaml")],
        **{family: ["train-generator", "--config", str(GENERATORS / "digits-flow-dit.yaml"),
                    "--generator.family", family, "--generator.process.kind", family]
           for family in ("flow", "ddpm", "vpsde")},
        "ar": ["train-generator", "--config", str(GENERATORS / "digits-ar.yaml"),
               "--data.spec", "shapes:size=32", "--tokenizer", str(out / "tokenizer")],
        "gan": ["train-generator", "--data.spec", "digits", "--generator.family", "gan",
                "--generator.network.kind", "gan"],
    }


def bf16_peak(n: int = 8192, repeats: int = 20) -> float:
    """GFLOP/s of the best of `repeats` (n, n) @ (n, n) bf16 products on the GPU."""
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    return 2 * n**3 / best / 1e9


def dit_flops_per_image() -> float:
    """Forward + backward FLOPs of the digits DiT for one image."""
    model = DiT(DIGITS_DIT, DIGITS[0], DIGITS[1], num_classes=10)
    x, t, y = torch.randn(8, *DIGITS), torch.rand(8), torch.randint(0, 10, (8,))
    with FlopCounterMode(display=False) as counter:
        model(x, t, y).square().mean().backward()
    return counter.get_total_flops() / 8


def train(name: str, args: list[str], steps: int, out: Path) -> list[dict]:
    """Run one CLI training; return its metrics.jsonl records."""
    log = max(steps // 10, 1)
    cmd = [sys.executable, "-m", "latentlab", *args, "--out", str(out / name),
           "--train.steps", str(steps), "--train.device", "cuda", "--train.precision", "bf16",
           "--train.log_every", str(log), "--train.eval_every", str(10 * steps),
           "--train.checkpoint_every", str(10 * steps)]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    print(f"{name}: {time.perf_counter() - start:.0f} s, exit {done.returncode}", flush=True)
    if done.returncode:
        print(done.stderr[-2000:])
        return []
    return [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()
            if line.strip()]


def run_figures(name: str, records: list[dict], peak: float, dit_flops: float
                ) -> tuple[list[Figure], bool]:
    """Loss first -> last window and images/s of one run; whether its loss fell."""
    records = [r for r in records if "items_per_s" in r]  # training windows, not evaluations
    if len(records) < 4:
        return [Figure(f"{name}_ok", 0, "")], False
    # the tokenizer's bottleneck loss may rise while it learns; its reconstruction must fall
    key = "loss/recon" if "loss/recon" in records[0] else min(
        k for k in records[0] if k.startswith("loss/"))
    first = statistics.mean(r[key] for r in records[:2])
    last = statistics.mean(r[key] for r in records[-2:])
    rate = statistics.median(r["items_per_s"] for r in records[1:])
    fell = last < first
    figures = [Figure(f"{name}_{key.replace('/', '_')}_first", first, ""),
               Figure(f"{name}_{key.replace('/', '_')}_last", last, ""),
               Figure(f"{name}_images_per_s", rate, "images/s"),
               Figure(f"{name}_ok", float(fell), "")]
    if name in ("flow", "ddpm", "vpsde"):
        figures.append(Figure(f"{name}_peak_fraction", 100 * rate * dit_flops / 1e9 / peak, "%"))
    return figures, fell


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {steps} steps per run")
    peak, dit_flops = bf16_peak(), dit_flops_per_image()
    figures, ok = [Figure("bf16_matmul_peak", peak, "GFLOP/s")], True
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in runs(Path(tmp)).items():
            run, fell = run_figures(name, train(name, args, steps, Path(tmp)), peak, dit_flops)
            figures, ok = figures + run, ok and fell
    print_figures(figures)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
