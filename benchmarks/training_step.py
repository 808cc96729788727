"""One training step of a tokenizer as the engine takes it, for the benchmarks to time.

Legend: B batch, C channels, H height, W width.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from common import Figure, median_times
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from latentlab.data.base import Batch
from latentlab.recipes.objective import TokenizerObjective
from latentlab.recipes.presets import TOKENIZER_PRESETS
from latentlab.tokenizers.conv import ConvConfig
from latentlab.tokenizers.tokenizer import Tokenizer, TokenizerConfig
from latentlab.training.config import TrainConfig
from latentlab.training.engine import _autocast, make_optimizers
from latentlab.training.objective import Objective

PRESET = TOKENIZER_PRESETS["digits-ae"]
"""Training settings (learning rate, clipping) and loss of every bare tokenizer step."""
# the engine's default (TrainConfig) and the plain baseline to compare it with
PRECISIONS = {"bf16": {"precision": "bf16", "channels_last": True},
              "fp32": {"precision": "fp32", "channels_last": False}}


@dataclass(frozen=True)
class Case:
    """A model and the images it trains on."""

    model: TokenizerConfig
    shape: tuple[int, int, int]
    """(C, H, W) of one image."""
    batch: int

    def tokenizer(self) -> Tokenizer:
        return Tokenizer(self.model, self.shape[0])


CASES = {
    "digits_ae": Case(PRESET.model, (1, 8, 8),
                      PRESET.train.batch_size),
    "conv32": Case(TokenizerConfig(latent_channels=4,
                                   arch=ConvConfig(channels=64, ch_mult=(1, 2, 2))),
                   (3, 32, 32), 64),
}

# conv32's step is ~200 GFLOP at batch 64: smoke runs (`--quick`) take a batch of 8
QUICK_CASES = CASES | {"conv32": dataclasses.replace(CASES["conv32"], batch=8)}


class ObjectiveStep:
    """One engine optimizer step of an objective's first phase, no loop: the engine's AdamW
    groups, its (private) autocast, so that the step follows the engine if it changes, and
    clipping. Subclasses build `objective`, `cfg` and `batch`, then call `ready()`."""

    objective: Objective
    cfg: TrainConfig
    batch: Batch

    def ready(self) -> None:
        self.phase = self.objective.phases[0]
        self.optimizer = make_optimizers(self.objective, self.cfg)[self.phase]
        self.params = self.objective.phase_parameters(self.phase)

    def forward_backward(self) -> None:
        with _autocast(self.cfg, torch.device("cpu")):
            loss = self.objective(self.phase, self.batch, 0, {}).loss
        loss.backward()

    def __call__(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.forward_backward()
        nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.optimizer.step()


class BareStep(ObjectiveStep):
    """One step of `TokenizerObjective(Tokenizer(case.model))`, built as `train` builds it:
    the objective and the batch in the engine's memory format; the preset's learning rate and
    clipping."""

    def __init__(self, case: Case, precision: str):
        self.cfg = dataclasses.replace(PRESET.train, device="cpu", **PRECISIONS[precision])
        fmt = torch.channels_last if self.cfg.channels_last else torch.contiguous_format
        torch.manual_seed(0)
        self.objective = TokenizerObjective(case.tokenizer(), PRESET.loss)
        self.objective.to(memory_format=fmt).train()
        x = torch.rand(case.batch, *case.shape) * 2 - 1  # pixels in [-1, 1]
        self.batch = Batch(x.contiguous(memory_format=fmt),
                           torch.zeros(case.batch, dtype=torch.int64))
        self.ready()


def step_flops(step: ObjectiveStep) -> int:
    """FLOPs of one forward and backward (the same whatever the dtype)."""
    with FlopCounterMode(display=False) as counter:
        step.forward_backward()
    step.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def measure_cases(cases: dict[str, Case], repeats: int, warmup: int, min_sample_s: float
                  ) -> tuple[dict[str, int], dict[tuple[str, str], float]]:
    """FLOPs per step of each case, and median seconds per step of each (case, precision)."""
    steps = {(n, p): BareStep(case, p) for n, case in cases.items() for p in PRECISIONS}
    flops = {n: step_flops(steps[n, "bf16"]) for n in cases}
    # all of them in turns, so that drift or a burst of outside load does not skew one ratio
    seconds = median_times(steps, repeats, warmup, min_sample_s)
    return flops, seconds


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
