"""Training throughput of the tokenizer through the training engine, against this machine's peak.

    python benchmarks/engine_speed.py [--quick] [--profile]

Two cases, each in the engine's two settings (bf16 autocast + channels_last, fp32 + NCHW):
    digits_ae  the `digits-ae` preset: 1x8x8 images, batch 64, ~3 GFLOP per step
    conv32     3x32x32 images, channels 64, ch_mult (1, 2, 2), batch 64, ~220 GFLOP per step
A "bare step" is one optimizer step as `latentlab.training.train` does it for one phase, with the
engine's own optimizer groups and autocast: zero grads, forward, backward, clip, AdamW. Its FLOPs
are counted by `FlopCounterMode` (convolutions and matmuls, forward and backward; norms,
activations and the optimizer add time but no counted FLOPs). Then `train` itself runs the
digits preset in a temporary run directory, a few times, each beside a sample of the bare step:
`engine_overhead` is the extra time per step of the whole call (data, seeding, EMA, syncs, and
set-up, final evaluation and checkpoint spread over its steps), `engine_loop_overhead` that of
the loop alone, from the rate the engine logs.

Figures, per case and precision: images/s, achieved GFLOP/s, the fraction of the peak of that
precision (`*_peak_fraction`; for fp32 runs also `*_bf16_peak_fraction`, of the machine's best),
and the bf16 speed-up. `other_load` is the share of the CPUs that other processes used during the
run: well above zero, the figures are low and noisy. `--profile` also prints the top operators of
the conv32 bf16 step.
"""

from __future__ import annotations

import dataclasses
import statistics
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
    measure_peak,
    median_time,
    parse_args,
    print_figures,
    print_top_ops,
)
from training_step import (
    CASES,
    PRECISIONS,
    PRESET,
    QUICK_CASES,
    BareStep,
    Case,
    case_figures,
    measure_cases,
)

from latentlab.data import load_dataset
from latentlab.recipes.objective import TokenizerObjective
from latentlab.training import RunDir, train


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
        objective = TokenizerObjective(CASES["digits_ae"].tokenizer(), PRESET.loss)
        run = RunDir(Path(tmp) / "run")
        start = time.perf_counter()
        result = train(objective, data, cfg, run, config_text="", eval_data=test)
        wall = time.perf_counter() - start
    return steps * cfg.batch_size / wall, result.logs["items_per_s"]


@dataclass(frozen=True)
class EngineResult:
    """Medians over rounds of an engine run each beside a sample of the bare step."""

    images_per_s: float
    """End to end, wall clock of `train`."""
    overhead: float
    """Bare-step images/s over end-to-end engine images/s, minus 1."""
    loop_overhead: float
    """The same against the engine's own logged rate (no set-up, final evaluation, checkpoint)."""


def engine_vs_bare(bare: BareStep, rounds: int, steps: int, min_sample_s: float) -> EngineResult:
    """Time `train` on the digits preset against `bare`, the same step without the loop.

    The two alternate, and each round's ratio is taken before the median: this machine's speed
    drifts by 10-20 % over tens of seconds, more than the overhead being measured.
    """
    engine_images_per_s(min(steps, 20))  # warm-up: imports, the first run directory
    runs, ratios, loop_ratios = [], [], []
    for _ in range(rounds):
        bare_images_per_s = bare.batch.x.shape[0] / median_time(bare, 3, 1, min_sample_s)
        end_to_end, logged = engine_images_per_s(steps)
        runs.append(end_to_end)
        ratios.append(bare_images_per_s / end_to_end - 1)
        loop_ratios.append(bare_images_per_s / logged - 1)
    return EngineResult(statistics.median(runs), statistics.median(ratios),
                        statistics.median(loop_ratios))


@dataclass(frozen=True)
class Settings:
    """How long to measure: full runs for stable figures, `--quick` for a smoke run."""

    cases: dict[str, Case]
    peak_sizes: tuple[int, ...]
    repeats: int
    warmup: int
    min_sample_s: float
    engine_rounds: int
    engine_steps: int


FULL = Settings(CASES, PEAK_SIZES, repeats=11, warmup=2, min_sample_s=0.3, engine_rounds=5,
                engine_steps=200)
QUICK = Settings(QUICK_CASES,
                 QUICK_PEAK_SIZES, repeats=1, warmup=1, min_sample_s=0.05, engine_rounds=1,
                 engine_steps=20)


def main() -> None:
    args = parse_args(__doc__, profile="also print the top operators of the conv32 bf16 step")
    settings = QUICK if args.quick else FULL

    with OtherLoad() as load:
        peaks = {"fp32": measure_peak(torch.float32, settings.peak_sizes),
                 "bf16": measure_peak(torch.bfloat16, settings.peak_sizes)}
        flops, seconds = measure_cases(settings.cases, settings.repeats, settings.warmup,
                                       settings.min_sample_s)
        engine = engine_vs_bare(BareStep(settings.cases["digits_ae"], "bf16"),
                                settings.engine_rounds, settings.engine_steps,
                                settings.min_sample_s)
    if args.profile:
        print_top_ops(BareStep(settings.cases["conv32"], "bf16"))

    figures = [Figure("fp32_matmul_peak", peaks["fp32"], "GFLOP/s"),
               Figure("bf16_matmul_peak", peaks["bf16"], "GFLOP/s")]
    for name, case in settings.cases.items():
        print(f"{name}: batch {case.batch}, {flops[name] / 1e9:.3f} GFLOP per training step")
        by_precision = {p: seconds[name, p] for p in PRECISIONS}
        figures += case_figures(name, case, by_precision, flops[name], peaks)
    figures += [Figure("engine_images_per_s", engine.images_per_s, "images/s"),
                Figure("engine_overhead", 100 * engine.overhead, "%"),
                Figure("engine_loop_overhead", 100 * engine.loop_overhead, "%"),
                Figure("other_load", 100 * load.fraction, "%")]
    print_figures(figures)


if __name__ == "__main__":
    main()
