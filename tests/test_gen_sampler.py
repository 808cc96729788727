"""Fixed-step ODE solvers against analytic solutions."""

from __future__ import annotations

import math

import pytest
import torch

from latentlab.generators.samplers import SOLVERS, euler, heun, midpoint
from latentlab.generators.time import time_grid


def grid(steps: int, start: float, end: float) -> torch.Tensor:
    return time_grid(steps, start, end, dtype=torch.float64)


@pytest.mark.parametrize("solver", SOLVERS.values())
@pytest.mark.parametrize("start,end", [(1.0, 0.0), (0.0, 1.0)])
def test_constant_field_is_exact(solver, start, end):
    # dx/dt = c: x(end) = x(start) + (end - start) c, exact for every explicit Runge-Kutta method
    x = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    c = torch.tensor([[2.0, 3.0]], dtype=torch.float64)
    out = solver(lambda x, t: c.expand_as(x), x, grid(7, start, end))
    torch.testing.assert_close(out, x + (end - start) * c)


def linear_error(solver, steps: int, a: float = -1.5) -> float:
    # dx/dt = a x from t = 1 to t = 0: x(0) = x(1) exp(-a)
    x = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    out = solver(lambda x, t: a * x, x, grid(steps, 1.0, 0.0))
    return (out - x * math.exp(-a)).abs().max().item()


def test_euler_is_first_order():
    ratio = linear_error(euler, 40) / linear_error(euler, 80)
    assert 1.8 < ratio < 2.2


@pytest.mark.parametrize("solver", [heun, midpoint])
def test_second_order_solvers(solver):
    e20, e40, e80 = (linear_error(solver, n) for n in (20, 40, 80))
    assert e40 < 5e-3  # the answer is about 9
    assert 3.6 < e20 / e40 < 4.4 and 3.6 < e40 / e80 < 4.4  # error ~ h^2


def test_time_dependent_field_midpoint_uses_half_time():
    # dx/dt = t has x(1) - x(0) = 1/2; midpoint is exact for a field linear in t, Euler is not
    x = torch.zeros(1, 1, dtype=torch.float64)
    ts = grid(4, 0.0, 1.0)
    assert midpoint(lambda x, t: t.expand_as(x), x, ts).item() == pytest.approx(0.5, abs=1e-12)
    assert heun(lambda x, t: t.expand_as(x), x, ts).item() == pytest.approx(0.5, abs=1e-12)
    assert euler(lambda x, t: t.expand_as(x), x, ts).item() == pytest.approx(0.375, abs=1e-12)


@pytest.mark.parametrize("solver", SOLVERS.values())
def test_solvers_are_deterministic(solver):
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    field = lambda x, t: torch.sin(x) * t  # noqa: E731
    ts = time_grid(5)
    assert torch.equal(solver(field, x, ts), solver(field, x, ts))
