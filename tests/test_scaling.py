"""The scaling-law fit L(N) = E + A N^(-alpha): recovery of known laws, refusal of data that
cannot determine one, and the rho^2 the coupled recipe takes from it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from latentlab.recipes.scaling import (
    IllPosedFit,
    PowerLaw,
    fit_power_law,
    fit_scaling_law,
    rho_squared,
)

SIZES = np.geomspace(1e3, 1e6, 8)


def law_points(e: float, b: float, alpha: float, noise: float, seed: int) -> np.ndarray:
    """Losses E + b N^-alpha at SIZES with relative Gaussian noise of std `noise`."""
    rng = np.random.default_rng(seed)
    return (e + b * SIZES ** -alpha) * (1 + noise * rng.standard_normal(len(SIZES)))


@pytest.mark.parametrize("e, b, alpha", [(0.5, 40.0, 0.5), (0.0, 3.0, 0.3), (1.2, 200.0, 0.9)])
def test_exact_points_give_back_the_law(e, b, alpha):
    law = fit_power_law(SIZES, law_points(e, b, alpha, 0.0, 0))
    e_fit, a_fit = law.E, law.A
    assert e_fit == pytest.approx(e, abs=1e-4)
    assert law.alpha == pytest.approx(alpha, rel=1e-4)
    # A is stored at the reference size n_ref (geometric mean of the sizes): b n_ref^-alpha
    assert law.n_ref == pytest.approx(math.exp(np.log(SIZES).mean()))
    assert a_fit == pytest.approx(b * law.n_ref ** -alpha, rel=1e-4)
    assert max(abs(r) for r in law.residuals) < 1e-6


@pytest.mark.parametrize("seed", range(5))
def test_noisy_points_recover_the_law(seed):
    e, b, alpha = 0.5, 40.0, 0.5
    law = fit_power_law(SIZES, law_points(e, b, alpha, 0.003, seed))
    e_fit, a_fit = law.E, law.A
    assert e_fit == pytest.approx(e, rel=0.02)
    assert law.alpha == pytest.approx(alpha, rel=0.03)
    assert a_fit == pytest.approx(b * law.n_ref ** -alpha, rel=0.05)
    assert len(law.residuals) == len(SIZES) and max(abs(r) for r in law.residuals) < 0.02
    # and the law extrapolates: a size 10x past the last point within 1 %
    assert law(1e7) == pytest.approx(e + b * 1e7 ** -alpha, rel=0.01)


def test_point_order_does_not_matter():
    losses = law_points(0.5, 40.0, 0.5, 0.003, 0)
    order = np.random.default_rng(1).permutation(len(SIZES))
    a, b = fit_power_law(SIZES, losses), fit_power_law(SIZES[order], losses[order])
    assert (a.E, a.A, a.alpha) == pytest.approx((b.E, b.A, b.alpha), rel=1e-6)


@pytest.mark.parametrize("n, loss, why", [
    ([1e3, 1e4, 1e5], [0.7, 0.7, 0.7], "does not fall"),
    ([1e3, 1e4], [0.9, 0.8], "at least 3 distinct sizes"),
    ([1e3, 1e3, 1e3, 1e4], [0.9, 0.9, 0.9, 0.8], "at least 3 distinct sizes"),
    ([1e3, 1e4, 1e5], [0.9, math.nan, 0.7], "not finite"),
    ([1e3, math.inf, 1e5], [0.9, 0.8, 0.7], "not finite"),
    ([1e3, 1e4, 1e5], [0.7, 0.8, 0.9], "does not fall"),
    ([1e3, 1e4, 1e5], [0.9, 0.0, 0.7], "positive"),
    ([1e3, 1e4, 1e5], [0.9, 0.8], "matching"),
    ([1e3, 1e4, 1e5, 1e6], [1.0, 0.5, 1.0, 0.5], "residual"),  # a saw, no power law
])
def test_degenerate_points_are_refused(n, loss, why):
    with pytest.raises(IllPosedFit, match=why):
        fit_power_law(n, loss)


def test_rho_squared_is_a_share_that_shrinks_with_the_big_size():
    law = fit_power_law(SIZES, law_points(0.5, 40.0, 0.5, 0.0, 0))
    tiny = law(SIZES[0])
    rho = [rho_squared(law, n_big, tiny) for n_big in np.geomspace(SIZES[0], 1e12, 30)]
    assert all(0 < r <= 1 for r in rho)
    assert all(b <= a for a, b in zip(rho, rho[1:], strict=False))
    assert rho[0] == pytest.approx(1.0)
    assert rho[-1] == pytest.approx(0.5 / tiny, rel=1e-3)  # tends to E / L_tiny


def test_rho_squared_falls_back_to_one():
    law = PowerLaw(E=0.5, A=1.0, alpha=0.5, n_ref=1.0, residuals=())
    assert rho_squared(law, 1e6, 0.0) == 1.0
    assert rho_squared(law, 1e6, math.nan) == 1.0
    assert rho_squared(law, 1e6, 0.1) == 1.0  # a law above the tiny loss predicts no gain


# -- L(N, S) -----------------------------------------------------------------------------------

BUDGETS = np.geomspace(2e3, 2e5, 5)


def budget_points(noise: float, seed: int, e=0.4, a=30.0, alpha=0.5, b=20.0, beta=0.4):
    """(n, s, loss) on the SIZES x BUDGETS grid of E + a N^-alpha + b S^-beta, with relative
    Gaussian noise of std `noise`."""
    n, s = (v.ravel() for v in np.meshgrid(SIZES, BUDGETS))
    rng = np.random.default_rng(seed)
    loss = (e + a * n ** -alpha + b * s ** -beta) * (1 + noise * rng.standard_normal(len(n)))
    return n, s, loss


@pytest.mark.parametrize("seed", range(4))
def test_noisy_points_recover_the_law_in_size_and_budget(seed):
    e, a, alpha, b, beta = 0.4, 30.0, 0.5, 20.0, 0.4
    law = fit_scaling_law(*budget_points(0.002, seed))
    e_fit, a_fit, b_fit = law.E, law.A, law.B
    assert e_fit == pytest.approx(e, rel=0.05)
    assert law.alpha == pytest.approx(alpha, rel=0.05)
    assert law.beta == pytest.approx(beta, rel=0.05)
    assert a_fit == pytest.approx(a * law.n_ref ** -alpha, rel=0.05)
    assert b_fit == pytest.approx(b * law.s_ref ** -beta, rel=0.05)
    # the prediction at a larger model *and* a longer budget than any point
    truth = e + a * 1e7 ** -alpha + b * 1e6 ** -beta
    assert law(1e7, 1e6) == pytest.approx(truth, rel=0.01)
    # at infinite training only the budget term goes
    assert law(1e7) == pytest.approx(e + a * 1e7 ** -alpha, rel=0.02)


def test_one_budget_reduces_to_the_law_in_size():
    losses = law_points(0.5, 40.0, 0.5, 0.003, 0)
    both = fit_scaling_law(SIZES, np.full(len(SIZES), 5e4), losses)
    alone = fit_power_law(SIZES, losses)
    assert both == alone and both.B == 0
    assert both(1e7, 5e4) == both(1e7) == alone(1e7)


@pytest.mark.parametrize("change, why", [
    (lambda n, s, l: tuple(v[s != s.max()] for v in (n, s, l)), None),  # 4 budgets: still fits
    (lambda n, s, l: (n, np.where(s > np.median(s), s.max(), s.min()), l), "3 for L\\(N, S\\)"),
    (lambda n, s, l: (n, s * 0, l), "finite and positive"),
    (lambda n, s, l: (n, s, l[:-1]), "matching"),
    (lambda n, s, l: (n, s, np.where(n == n.max(), l * 3, l)), "does not fall"),
    (lambda n, s, l: (np.full_like(n, 1e3), s, l), "3 distinct sizes"),
])
def test_degenerate_points_in_size_and_budget_are_refused(change, why):
    points = change(*budget_points(0.0, 0))
    if why is None:
        assert fit_scaling_law(*points).B > 0
        return
    with pytest.raises(IllPosedFit, match=why):
        fit_scaling_law(*points)
