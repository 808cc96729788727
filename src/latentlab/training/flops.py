"""Training FLOPs: the unit a study's equal-compute budgets are counted in.

`torch.utils.flop_counter.FlopCounterMode` counts the floating-point operations of the matmuls,
convolutions and attention that run inside it, forward and backward (2 per multiply-add).
Element-wise work (norms, activations, the optimizer) is not counted; it is a small share of a
step of these networks and the same kind of work in every recipe. Counting runs a real step on
a real batch, on a copy, so the objective, its buffers and the random streams are untouched.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def counted_flops(work: Callable[[], None]) -> int:
    """FLOPs of everything `work()` runs (forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        work()
    return int(counter.get_total_flops())


def phase_flops(objective: nn.Module, batch, step: int) -> dict[str, int]:
    """FLOPs of one optimizer step at `step` per phase of a training objective (`forward(phase,
    batch, step, handed) -> PhaseOutput`, as `training.train` calls it): forward and backward
    on `batch`, on a copy of the objective."""
    model = copy.deepcopy(objective)
    handed: dict[str, Any] = {}  # what each phase hands on to the later ones, as in the loop

    def run(phase: str) -> None:
        loss, _, handed[phase] = model(phase, batch, step, handed)
        loss.backward()

    return {phase: counted_flops(lambda p=phase: run(p)) for phase in model.phases}


def mean_step_flops(objective: nn.Module, batch, steps: int, points: int = 5) -> float:
    """Mean FLOPs per optimizer step over `points` steps spread evenly through a run of `steps`
    (a recipe's cost changes as its stages switch on: a regularizer, a DAE's stage 2)."""
    at: Sequence[int] = sorted({round(i * (steps - 1) / max(points - 1, 1))
                                for i in range(points)})
    with torch.random.fork_rng():  # the caller's random streams stay where they were
        torch.manual_seed(0)
        return statistics.fmean(sum(phase_flops(objective, batch, s).values()) for s in at)


def first_batch(data, size: int):
    """The first `size` items of a latentlab dataset as one batch (what FLOPs are counted on)."""
    return data.__getitems__(list(range(min(size, len(data)))))
