"""The scaling law of generator loss in parameter count N and training samples S:

    L(N, S) = E + A * N^(-alpha) + B * S^(-beta)

E is the loss no model size or training removes (the data's own entropy under the process),
A * N^(-alpha) the part a larger model removes, B * S^(-beta) the part longer training removes
(Hoffmann et al. 2022, "Chinchilla", fit this additive form; Kaplan et al. 2020 the L(N) part).
Fitted on a few small generators observed at several points of their training, it predicts the
loss of a larger one at *its* training budget, not at infinite training. With one budget S the
S term cannot be told from E, and the fit is today's L(N) = E + A * N^(-alpha) (B = 0). The
coupled recipe uses the prediction to set how much error the big generator will leave;
`latentlab scaling` checks it.

The fit minimises relative residuals (L_fit - L) / L by bounded least squares over E in
[0, min L], A, B >= 0, alpha, beta in [0, ALPHA_MAX], from several starting points. N and S are
scaled by their geometric means so A and B stay of order L. A fit is refused (`IllPosedFit`) when
the data cannot determine it: fewer than 3 distinct sizes (or 2 distinct budgets: one is L(N),
three are needed for the S term), a non-finite or non-positive value, losses that do not fall
with N, or a fit whose residuals are large.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

ALPHA_MAX = 4.0
MAX_RESIDUAL = 0.05
"""Largest relative residual (5 %) of an accepted fit."""


class IllPosedFit(ValueError):
    """The points cannot determine a power law; the message says why."""


@dataclass(frozen=True)
class PowerLaw:
    """L(N, S) = E + A * (N / n_ref)^(-alpha) + B * (S / s_ref)^(-beta), fitted to points
    (n, s, loss); B = 0 when fitted at one budget (then L depends on N alone)."""

    E: float
    A: float
    alpha: float
    n_ref: float
    """Scale of N (the geometric mean of the fitted sizes), so A is a loss, not A * n_ref^alpha."""
    residuals: tuple[float, ...]
    """Relative residuals (fit - loss) / loss at the fitted points."""
    B: float = 0.0
    beta: float = 0.0
    s_ref: float = 1.0
    """Scale of S (the geometric mean of the fitted budgets)."""

    def __call__(self, n: float, s: float = math.inf) -> float:
        """The loss at N = n after S = s samples (s = inf: trained to convergence)."""
        budget = 0.0 if self.B == 0 or math.isinf(s) else self.B * (s / self.s_ref) ** -self.beta
        return self.E + self.A * (n / self.n_ref) ** (-self.alpha) + budget

    def as_dict(self) -> dict[str, float | list[float]]:
        return {"E": self.E, "A": self.A, "alpha": self.alpha, "n_ref": self.n_ref,
                "B": self.B, "beta": self.beta, "s_ref": self.s_ref,
                "residuals": list(self.residuals)}


def _check_points(n: np.ndarray, loss: np.ndarray) -> None:
    if not (np.isfinite(n).all() and np.isfinite(loss).all()):
        raise IllPosedFit("a size or loss is not finite")
    if (n <= 0).any() or (loss <= 0).any():
        raise IllPosedFit("sizes and losses must be positive")
    if len(np.unique(n)) < 3:
        raise IllPosedFit(f"need at least 3 distinct sizes, got {len(np.unique(n))}")


def _check_falls(n: np.ndarray, loss: np.ndarray) -> None:
    """The loss at the largest size is below the loss at the smallest."""
    small, large = np.argmin(n), np.argmax(n)
    if not loss[large] < loss[small] * (1 - 1e-6):
        raise IllPosedFit("the loss does not fall with size "
                          f"({loss[small]:.6g} at N={n[small]:.0f}, {loss[large]:.6g} at "
                          f"N={n[large]:.0f})")


def fit_power_law(n: Sequence[float], loss: Sequence[float]) -> PowerLaw:
    """Fit L(N) = E + A N^(-alpha) to losses at parameter counts `n`.

    Raises:
        IllPosedFit: the points do not determine a power law (see the module docstring).
    """
    n_arr, l_arr = np.asarray(n, dtype=np.float64), np.asarray(loss, dtype=np.float64)
    if n_arr.shape != l_arr.shape or n_arr.ndim != 1:
        raise IllPosedFit(f"need matching 1-D sizes and losses, got {n_arr.shape} and "
                          f"{l_arr.shape}")
    _check_points(n_arr, l_arr)
    order = np.argsort(n_arr)
    n_arr, l_arr = n_arr[order], l_arr[order]
    _check_falls(n_arr, l_arr)

    n_ref = float(np.exp(np.log(n_arr).mean()))
    x = n_arr / n_ref
    floor = float(l_arr.min())

    def residual(p: np.ndarray) -> np.ndarray:
        e, a, alpha = p
        return (e + a * x ** (-alpha) - l_arr) / l_arr

    starts = []
    for share in (0.0, 0.5, 0.9):  # several starts: E near 0, half, most of the floor
        e0 = share * floor
        # initial alpha and A from the log-log slope of L - E0 between the end points
        gap = np.maximum(l_arr - e0, 1e-12 * floor)
        alpha0 = float(np.clip(-np.polyfit(np.log(x), np.log(gap), 1)[0], 0.05, ALPHA_MAX))
        starts.append([e0, float(np.exp(np.log(gap).mean())), alpha0])
    (e, a, alpha), res = _solve(residual, starts, [floor, np.inf, ALPHA_MAX])
    return PowerLaw(e, a, alpha, n_ref, res)


def _solve(residual, starts: list[list[float]], upper: list[float]
           ) -> tuple[list[float], tuple[float, ...]]:
    """Bounded least squares (lower bounds 0) from each start; the best parameters, whose
    first three are E, A, alpha, and their relative residuals.

    Raises:
        IllPosedFit: no start converged, the fit has no size dependence, or a residual is
            over MAX_RESIDUAL.
    """
    best = None
    for start in starts:
        fit = least_squares(residual, start, bounds=([0.0] * len(upper), upper))
        if fit.success and (best is None or fit.cost < best.cost):
            best = fit
    if best is None:
        raise IllPosedFit("least squares did not converge")
    params = [float(v) for v in best.x]
    res = residual(best.x)
    if not params[1] > 0 or not params[2] > 0:
        raise IllPosedFit(f"no size dependence in the fit (A={params[1]:.3g}, "
                          f"alpha={params[2]:.3g})")
    if np.abs(res).max() > MAX_RESIDUAL:
        raise IllPosedFit(f"largest relative residual {np.abs(res).max():.1%} exceeds "
                          f"{MAX_RESIDUAL:.0%}")
    return params, tuple(float(r) for r in res)


def fit_scaling_law(n: Sequence[float], s: Sequence[float], loss: Sequence[float]) -> PowerLaw:
    """Fit L(N, S) = E + A N^(-alpha) + B S^(-beta) to losses at (n, s) points: sizes n after
    s training samples. One distinct s gives `fit_power_law` (B = 0).

    Raises:
        IllPosedFit: the points do not determine the law (see the module docstring).
    """
    n_arr, s_arr, l_arr = (np.asarray(v, dtype=np.float64) for v in (n, s, loss))
    if not (n_arr.shape == s_arr.shape == l_arr.shape) or n_arr.ndim != 1:
        raise IllPosedFit(f"need matching 1-D sizes, budgets and losses, got {n_arr.shape}, "
                          f"{s_arr.shape} and {l_arr.shape}")
    if not np.isfinite(s_arr).all() or (s_arr <= 0).any():
        raise IllPosedFit("budgets must be finite and positive")
    budgets = np.unique(s_arr)
    if len(budgets) == 1:
        return fit_power_law(n_arr, l_arr)
    if len(budgets) < 3:
        raise IllPosedFit(f"need 1 budget (L(N)) or at least 3 for L(N, S), got {len(budgets)}")
    _check_points(n_arr, l_arr)
    last = s_arr == budgets[-1]  # the size dependence is judged where training went furthest
    if len(np.unique(n_arr[last])) >= 3:
        _check_falls(n_arr[last], l_arr[last])

    n_ref = float(np.exp(np.log(n_arr).mean()))
    s_ref = float(np.exp(np.log(s_arr).mean()))
    x, y = n_arr / n_ref, s_arr / s_ref
    floor = float(l_arr.min())

    def residual(p: np.ndarray) -> np.ndarray:
        e, a, alpha, b, beta = p
        return (e + a * x ** (-alpha) + b * y ** (-beta) - l_arr) / l_arr

    gaps = [max((1 - share) * floor, 1e-12) for share in (0.0, 0.5, 0.9)]
    starts = [[floor - gap, gap / 2, 0.5, gap / 2, 0.5] for gap in gaps]
    (e, a, alpha, b, beta), res = _solve(residual, starts,
                                         [floor, np.inf, ALPHA_MAX, np.inf, ALPHA_MAX])
    return PowerLaw(e, a, alpha, n_ref, res, b, beta, s_ref)


def rho_squared(law: PowerLaw, n_big: float, tiny_loss: float, s_big: float = math.inf
                ) -> float:
    """rho^2 = L(N_big, S_big) / L_tiny, clipped to (0, 1]: the big generator's error as a share
    of the tiny one's (1 when the law predicts no gain, or the tiny loss is not positive)."""
    if not (tiny_loss > 0 and math.isfinite(tiny_loss)):
        return 1.0
    return float(min(1.0, max(law(n_big, s_big) / tiny_loss, 1e-6)))
