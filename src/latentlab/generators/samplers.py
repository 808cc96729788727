"""Generic fixed-step ODE solvers for dx/dt = f(x, t) over a given time grid.

The grid may run either way (noise -> data is decreasing under the convention of `time.py`).
Each solver is deterministic given its inputs. `f(x, t)` receives `t` as a 0-d tensor taken from
the grid; callers that need a (B,) time expand it themselves.

Legend: B batch, D any trailing data dims, S number of steps (len(ts) - 1).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

VectorField = Callable[[Tensor, Tensor], Tensor]
"""f(x (B, *D), t 0-d) -> dx/dt (B, *D)."""


def _check_grid(ts: Tensor) -> None:
    assert ts.ndim == 1 and len(ts) >= 2, f"ts must be a 1-D grid of >= 2 times, got {ts.shape}"


def euler(f: VectorField, x: Tensor, ts: Tensor) -> Tensor:
    """Explicit Euler, first order: x <- x + h f(x, t). Exact for a constant field.

    Args:
        f: the vector field.
        x: (B, *D) state at ts[0].
        ts: (S + 1,) grid, increasing or decreasing.

    Returns:
        (B, *D) state at ts[-1].
    """
    _check_grid(ts)
    for t0, t1 in zip(ts[:-1], ts[1:], strict=True):
        x = x + (t1 - t0) * f(x, t0)
    return x


def heun(f: VectorField, x: Tensor, ts: Tensor) -> Tensor:
    """Heun's method (explicit trapezoid), second order, two evaluations per step.

    Args and returns as `euler`.
    """
    _check_grid(ts)
    for t0, t1 in zip(ts[:-1], ts[1:], strict=True):
        h = t1 - t0
        d0 = f(x, t0)
        d1 = f(x + h * d0, t1)
        x = x + 0.5 * h * (d0 + d1)
    return x


def midpoint(f: VectorField, x: Tensor, ts: Tensor) -> Tensor:
    """Explicit midpoint method, second order, two evaluations per step.

    Args and returns as `euler`.
    """
    _check_grid(ts)
    for t0, t1 in zip(ts[:-1], ts[1:], strict=True):
        h = t1 - t0
        x_half = x + 0.5 * h * f(x, t0)
        x = x + h * f(x_half, t0 + 0.5 * h)
    return x


SOLVERS: dict[str, Callable[[VectorField, Tensor, Tensor], Tensor]] = {
    "euler": euler,
    "heun": heun,
    "midpoint": midpoint,
}
