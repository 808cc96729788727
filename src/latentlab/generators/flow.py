"""Flow matching with the rectified-flow path (Liu et al. 2022; Lipman et al. 2022).

x_t = (1 - t) x_0 + t eps, so the network regresses the constant velocity v = eps - x_0 and
sampling integrates dx/dt = v from t = 1 (noise) to t = 0 (data) with a solver of `samplers.py`.

Legend: B batch, D any trailing data dims.
"""

from __future__ import annotations

import torch
from torch import Tensor

from latentlab.generators.likelihood import Field
from latentlab.generators.process import Model, Process, adaptive, per_batch
from latentlab.generators.samplers import SOLVERS
from latentlab.generators.time import T_DATA, T_NOISE, TIME_SAMPLING, sample_time, time_grid


def _solve(solver: str):
    def run(process: FlowMatching, model: Model, x: Tensor, steps: int,
            generator: torch.Generator | None) -> Tensor:
        ts = time_grid(steps, T_NOISE, T_DATA, device=x.device, dtype=x.dtype)
        return SOLVERS[solver](model, x, ts)

    run.__doc__ = f"Integrate dx/dt = v from t = 1 to t = 0 with `samplers.{solver}`."
    return run


class FlowMatching(Process):
    """Rectified flow: x_t = (1 - t) x_0 + t eps, target v = eps - x_0, MSE loss.

    Args:
        time_sampling: training time distribution, "uniform" or "logit_normal" (`time.py`).
    """

    samplers = {name: _solve(name) for name in SOLVERS} | {"dopri5": adaptive}
    default_sampler = "euler"

    def __init__(self, time_sampling: str = "uniform"):
        if time_sampling not in TIME_SAMPLING:
            raise ValueError(f"time_sampling must be one of {', '.join(TIME_SAMPLING)}, "
                             f"got {time_sampling!r}")
        self.time_sampling = time_sampling

    def __repr__(self) -> str:
        return f"FlowMatching(time_sampling={self.time_sampling!r})"

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return 1 - t, t

    def ode_field(self, model: Model) -> Field:
        """The network's velocity itself."""
        return model

    def sample_train_time(self, n, generator, device, dtype) -> Tensor:
        return sample_time(n, self.time_sampling, generator, device, dtype)

    def target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        return noise - x0

    def x0_estimate(self, prediction: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """x_0 = x_t - t v."""
        return x_t - per_batch(t, x_t) * prediction
