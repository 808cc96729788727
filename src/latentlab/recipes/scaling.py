"""The scaling law of generator loss in parameter count: L(N) = E + A * N^(-alpha).

E is the loss no model size removes (the data's own entropy under the process), A * N^(-alpha)
the part a larger model removes. Fitted on a few small generators, it predicts the loss of a
larger one (Kaplan et al. 2020; Hoffmann et al. 2022 fit the same form). The coupled recipe uses
the prediction to set how much error the big generator will leave; `latentlab scaling` checks it.

The fit minimises relative residuals (L_fit(N_k) - L_k) / L_k by bounded least squares over
E in [0, min L], A >= 0, alpha in [0, ALPHA_MAX], from several starting points. N is scaled by
the geometric mean of the N_k so A stays of order L. A fit is refused (`IllPosedFit`) when the
data cannot determine it: fewer than 3 distinct sizes, a non-finite or non-positive value, losses
that do not fall with N, or a fit whose residuals are large.
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
    """L(N) = E + A * (N / n_ref)^(-alpha), fitted to (n, loss) points."""

    E: float
    A: float
    alpha: float
    n_ref: float
    """Scale of N (the geometric mean of the fitted sizes), so A is a loss, not A * n_ref^alpha."""
    residuals: tuple[float, ...]
    """Relative residuals (fit - loss) / loss at the fitted points."""

    def __call__(self, n: float) -> float:
        return self.E + self.A * (n / self.n_ref) ** (-self.alpha)

    def as_dict(self) -> dict[str, float | list[float]]:
        return {"E": self.E, "A": self.A, "alpha": self.alpha, "n_ref": self.n_ref,
                "residuals": list(self.residuals)}


def fit_power_law(n: Sequence[float], loss: Sequence[float]) -> PowerLaw:
    """Fit L(N) = E + A N^(-alpha) to losses at parameter counts `n`.

    Raises:
        IllPosedFit: the points do not determine a power law (see the module docstring).
    """
    n_arr, l_arr = np.asarray(n, dtype=np.float64), np.asarray(loss, dtype=np.float64)
    if n_arr.shape != l_arr.shape or n_arr.ndim != 1:
        raise IllPosedFit(f"need matching 1-D sizes and losses, got {n_arr.shape} and "
                          f"{l_arr.shape}")
    if not (np.isfinite(n_arr).all() and np.isfinite(l_arr).all()):
        raise IllPosedFit("a size or loss is not finite")
    if (n_arr <= 0).any() or (l_arr <= 0).any():
        raise IllPosedFit("sizes and losses must be positive")
    if len(np.unique(n_arr)) < 3:
        raise IllPosedFit(f"need at least 3 distinct sizes, got {len(np.unique(n_arr))}")
    order = np.argsort(n_arr)
    n_arr, l_arr = n_arr[order], l_arr[order]
    if not l_arr[-1] < l_arr[0] * (1 - 1e-6):
        raise IllPosedFit("the loss does not fall with size "
                          f"({l_arr[0]:.6g} at N={n_arr[0]:.0f}, {l_arr[-1]:.6g} at "
                          f"N={n_arr[-1]:.0f})")

    n_ref = float(np.exp(np.log(n_arr).mean()))
    x = n_arr / n_ref
    floor = float(l_arr.min())

    def residual(p: np.ndarray) -> np.ndarray:
        e, a, alpha = p
        return (e + a * x ** (-alpha) - l_arr) / l_arr

    best = None
    for share in (0.0, 0.5, 0.9):  # several starts: E near 0, half, most of the floor
        e0 = share * floor
        # initial alpha and A from the log-log slope of L - E0 between the end points
        gap = np.maximum(l_arr - e0, 1e-12 * floor)
        alpha0 = float(np.clip(-np.polyfit(np.log(x), np.log(gap), 1)[0], 0.05, ALPHA_MAX))
        a0 = float(np.exp(np.log(gap).mean()))
        fit = least_squares(residual, [e0, a0, alpha0],
                            bounds=([0.0, 0.0, 0.0], [floor, np.inf, ALPHA_MAX]))
        if fit.success and (best is None or fit.cost < best.cost):
            best = fit
    if best is None:
        raise IllPosedFit("least squares did not converge")
    e, a, alpha = (float(v) for v in best.x)
    res = residual(best.x)
    if not a > 0 or not alpha > 0:
        raise IllPosedFit(f"no size dependence in the fit (A={a:.3g}, alpha={alpha:.3g})")
    if np.abs(res).max() > MAX_RESIDUAL:
        raise IllPosedFit(f"largest relative residual {np.abs(res).max():.1%} exceeds "
                          f"{MAX_RESIDUAL:.0%}")
    return PowerLaw(e, a, alpha, n_ref, tuple(float(r) for r in res))


def rho_squared(law: PowerLaw, n_big: float, tiny_loss: float) -> float:
    """rho^2 = L(N_big) / L_tiny, clipped to (0, 1]: the big generator's error as a share of
    the tiny one's (1 when the law predicts no gain, or the tiny loss is not positive)."""
    if not (tiny_loss > 0 and math.isfinite(tiny_loss)):
        return 1.0
    return float(min(1.0, max(law(n_big) / tiny_loss, 1e-6)))
