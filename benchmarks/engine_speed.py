"""Training throughput of the autoencoder through the training engine, against this machine's peak.

    python benchmarks/engine_speed.py [--quick] [--profile]

Two cases, each in the engine's two settings (bf16 autocast + channels_last, fp32 + NCHW):
    digits_ae  the `digits-ae` preset: 1x8x8 images, batch 64 (small: bound by per-op overhead)
    conv32     3x32x32 images, channels 64, ch_mult (1, 2, 2), batch 64 (bound by convolutions)
A "bare step" is one optimizer step as `latentlab.training.train` does it for one phase, with the
engine's own optimizer groups and autocast: zero grads, forward, backward, clip, AdamW. Its FLOPs
are counted by `FlopCounterMode` (convolutions and matmuls, forward and backward; norms,
activations and the optimizer add time but no counted FLOPs). Then `train` itself runs the
digits preset end to end, and `engine_overhead` is the extra time per step the loop adds (data,
seeding, EMA, syncs, set-up, the final evaluation and checkpoint).

Figures, per case and precision: images/s, achieved GFLOP/s, the fraction of the peak of that
precision (`*_peak_fraction`; for fp32 runs also `*_bf16_peak_fraction`, of the machine's best),
and the bf16 speed-up. `--profile` also prints the top operators of the conv32 bf16 step.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from common import (
    PEAK_SIZES,
    QUICK_PEAK_SIZES,
    Figure,
    OtherLoad,
    make_parser,
    measure_peak,
    median_times,
    print_figures,
)
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from latentlab.data import load_dataset
from latentlab.data.base import Batch
from latentlab.recipes.baseline import ReconstructionObjective
from latentlab.recipes.train import TOKENIZER_PRESETS
from latentlab.tokenizers.autoencoder import Autoencoder, AutoencoderConfig
from latentlab.training import RunDir, train
from latentlab.training.engine import _autocast, make_optimizers

PRESET = TOKENIZER_PRESETS["digits-ae"]
PRECISIONS = {"bf16": {"precision": "bf16", "channels_last": True},
              "fp32": {"precision": "fp32", "channels_last": False}}


@dataclass(frozen=True)
class Case:
    """A model and the images it trains on."""

    model: AutoencoderConfig
    shape: tuple[int, int, int]
    """(C, H, W) of one image."""
    batch: int


CASES = {
    "digits_ae": Case(dataclasses.replace(PRESET.model, in_channels=1), (1, 8, 8),
                      PRESET.train.batch_size),
    "conv32": Case(AutoencoderConfig(in_channels=3, channels=64, ch_mult=(1, 2, 2)),
                   (3, 32, 32), 64),
}


class BareStep:
    """One engine optimizer step of `ReconstructionObjective(Autoencoder(case.model))`, no loop.

    Built as `train` builds it: the objective and the batch in the engine's memory format, the
    engine's AdamW groups, its autocast; the preset's learning rate and clipping.
    """

    def __init__(self, case: Case, precision: str):
        self.cfg = dataclasses.replace(PRESET.train, device="cpu", **PRECISIONS[precision])
        fmt = torch.channels_last if self.cfg.channels_last else torch.contiguous_format
        torch.manual_seed(0)
        self.objective = ReconstructionObjective(Autoencoder(case.model), PRESET.loss)
        self.objective.to(memory_format=fmt).train()
        self.optimizer = make_optimizers(self.objective, self.cfg)["main"]
        self.params = self.objective.phase_parameters("main")
        x = torch.rand(case.batch, *case.shape) * 2 - 1  # pixels in [-1, 1]
        self.batch = Batch(x.contiguous(memory_format=fmt),
                           torch.zeros(case.batch, dtype=torch.int64))

    def forward_backward(self) -> None:
        with _autocast(self.cfg, torch.device("cpu")):
            loss, _ = self.objective("main", self.batch, 0)
        loss.backward()

    def __call__(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.forward_backward()
        nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.optimizer.step()


def step_flops(step: BareStep) -> int:
    """FLOPs of one forward and backward (the same whatever the dtype)."""
    with FlopCounterMode(display=False) as counter:
        step.forward_backward()
    step.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def engine_images_per_s(steps: int) -> tuple[float, float]:
    """Train the digits preset for `steps` through `train`, in a temporary run directory.

    Returns images/s end to end (wall clock of the `train` call: set-up, loop, final evaluation
    and checkpoint) and as the engine logs it (the loop alone).
    """
    cfg = dataclasses.replace(PRESET.train, steps=steps, device="cpu", log_every=steps,
                              eval_every=0, checkpoint_every=steps)
    data, test = load_dataset(PRESET.data.spec, "train"), load_dataset(PRESET.data.spec, "test")
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(cfg.seed)
        objective = ReconstructionObjective(Autoencoder(CASES["digits_ae"].model), PRESET.loss)
        run = RunDir(Path(tmp) / "run")
        start = time.perf_counter()
        result = train(objective, data, cfg, run, config_text="", eval_data=test)
        wall = time.perf_counter() - start
    return steps * cfg.batch_size / wall, result.logs["items_per_s"]


def profile_step(step: BareStep, top: int = 15) -> None:
    """Print the operators that take the most CPU time over a few steps."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top))


def case_figures(name: str, case: Case, seconds: dict[str, float], flops: int,
                 peaks: dict[str, float]) -> list[Figure]:
    """The figures of one case from the median step time of each precision."""
    figures = []
    for precision, t in seconds.items():
        gflops = flops / t / 1e9
        prefix = f"{name}_{precision}"
        figures += [Figure(f"{prefix}_images_per_s", case.batch / t, "images/s"),
                    Figure(f"{prefix}_gflops", gflops, "GFLOP/s"),
                    Figure(f"{prefix}_peak_fraction", 100 * gflops / peaks[precision], "%")]
        if precision != "bf16":
            figures.append(Figure(f"{prefix}_bf16_peak_fraction",
                                  100 * gflops / peaks["bf16"], "%"))
    figures.append(Figure(f"{name}_bf16_over_fp32", seconds["fp32"] / seconds["bf16"], "x"))
    return figures


def main() -> None:
    parser = make_parser(__doc__.splitlines()[0])
    parser.add_argument("--profile", action="store_true",
                        help="also print the top operators of the conv32 bf16 step")
    args = parser.parse_args()
    cases, sizes = CASES, PEAK_SIZES
    repeats, warmup, min_sample_s, engine_steps = 15, 2, 0.3, 1000
    if args.quick:
        # a smoke run: conv32's step is ~200 GFLOP at batch 64, so take a small batch
        cases = CASES | {"conv32": dataclasses.replace(CASES["conv32"], batch=8)}
        sizes, repeats, warmup, min_sample_s, engine_steps = QUICK_PEAK_SIZES, 1, 1, 0.05, 30

    with OtherLoad() as load:
        peaks = {"fp32": measure_peak(torch.float32, sizes),
                 "bf16": measure_peak(torch.bfloat16, sizes)}
        steps = {(n, p): BareStep(case, p) for n, case in cases.items() for p in PRECISIONS}
        flops = {n: step_flops(steps[n, "bf16"]) for n in cases}
        # all four in turns, so that a burst of outside load does not skew one ratio
        seconds = median_times({f"{n}/{p}": s for (n, p), s in steps.items()}, repeats,
                               warmup, min_sample_s)
        engine_images_per_s(min(engine_steps, 20))  # warm-up: imports, first run directory
        engine, engine_logged = engine_images_per_s(engine_steps)
    if args.profile:
        profile_step(steps["conv32", "bf16"])

    figures = [Figure("fp32_matmul_peak", peaks["fp32"], "GFLOP/s"),
               Figure("bf16_matmul_peak", peaks["bf16"], "GFLOP/s")]
    for name, case in cases.items():
        print(f"{name}: batch {case.batch}, {flops[name] / 1e9:.3f} GFLOP per step "
              "(forward + backward)")
        by_precision = {p: seconds[f"{name}/{p}"] for p in PRECISIONS}
        figures += case_figures(name, case, by_precision, flops[name], peaks)
    bare = cases["digits_ae"].batch / seconds["digits_ae/bf16"]
    figures += [Figure("engine_images_per_s", engine, "images/s"),
                Figure("engine_overhead", 100 * (bare / engine - 1), "%"),
                Figure("engine_loop_overhead", 100 * (bare / engine_logged - 1), "%"),
                Figure("other_load", 100 * load.fraction, "%")]
    print_figures(figures)


if __name__ == "__main__":
    main()
