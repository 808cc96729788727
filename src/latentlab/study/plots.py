"""The report's figures, one function per plot, each returning PNG bytes.

Figures are drawn on `matplotlib.figure.Figure` with the Agg canvas (no pyplot, no display, no
global state). Every function takes plain data keyed by recipe, so it can be tested and reused
without a study on disk.
"""

from __future__ import annotations

import io
import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

Curve = tuple[list[float], list[float]]  # (steps, values)


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


def _figure(width: float = 6.0, height: float = 3.6) -> tuple[Figure, object]:
    fig = Figure(figsize=(width, height))
    return fig, fig.add_subplot(1, 1, 1)


def fig_curves(curves: dict[str, list[Curve]], title: str, ylabel: str,
               log_y: bool = False) -> bytes:
    """Training curves: one colour per recipe, one line per seed (the first seed solid)."""
    fig, ax = _figure()
    for i, (recipe, seeds) in enumerate(curves.items()):
        for k, (steps, values) in enumerate(seeds):
            ax.plot(steps, values, color=f"C{i}", alpha=1.0 if k == 0 else 0.35,
                    label=recipe if k == 0 else None)
    ax.set(title=title, xlabel="step", ylabel=ylabel)
    if log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def fig_scaling(fits: dict[str, dict], title: str) -> bytes:
    """Scaling-law fits, log-log, one colour per fit (e.g. per time bin): the tiny generators'
    losses (points), the fitted L(N) = E + A (N / n_ref)^(-alpha) (line, accepted fits only)
    and its prediction at the big generator's size N_big (star)."""
    fig, ax = _figure()
    for i, (name, fit) in enumerate(fits.items()):
        n, loss = fit.get("params") or [], fit.get("losses") or []
        if n and loss:
            ax.scatter(n, loss, color=f"C{i}", zorder=3,
                       label=f"{name}" + ("" if fit.get("ok", True) else " (fit refused)"))
        if fit.get("ok", True) and all(k in fit for k in ("E", "A", "alpha", "n_ref")):
            hi = max([*n, fit.get("n_big") or 0, 1]) * 1.5
            lo = min(n) / 1.5 if n else hi / 100
            grid = np.geomspace(lo, hi, 100)
            curve = fit["E"] + fit["A"] * (grid / fit["n_ref"]) ** (-fit["alpha"])
            ax.plot(grid, curve, color=f"C{i}", alpha=0.7,
                    label=f"{name}: E={fit['E']:.3g}, A={fit['A']:.3g}, "
                          f"alpha={fit['alpha']:.2f}")
            if fit.get("n_big") and fit.get("predicted") is not None:
                ax.scatter([fit["n_big"]], [fit["predicted"]], marker="*", s=160,
                           color=f"C{i}", edgecolor="black", zorder=4)
    ax.set(title=title, xlabel="parameters N (star: N_big)", ylabel="loss")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return _png(fig)


def fig_bars(values: dict[str, dict[str, tuple[float, float]]], title: str) -> bytes:
    """Grouped bars with standard-deviation whiskers: {metric: {recipe: (mean, std)}}."""
    metrics = list(values)
    recipes = list(dict.fromkeys(r for per in values.values() for r in per))
    fig, ax = _figure(max(6.0, 1.2 * len(metrics) * max(1, len(recipes)) / 2), 3.6)
    width = 0.8 / max(1, len(recipes))
    x = np.arange(len(metrics))
    for i, recipe in enumerate(recipes):
        means = [values[m].get(recipe, (math.nan, 0.0))[0] for m in metrics]
        stds = [values[m].get(recipe, (math.nan, 0.0))[1] for m in metrics]
        ax.bar(x + (i - (len(recipes) - 1) / 2) * width, means, width, yerr=stds,
               capsize=3, color=f"C{i}", label=recipe)
    ax.set_xticks(x)
    ax.set_xticklabels(metrics, rotation=15, ha="right", fontsize=8)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return _png(fig)


def fig_eigenvalues(spectra: dict[str, list[float]]) -> bytes:
    """Eigenvalue decay of the latent covariance, normalised to sum 1, on a log scale."""
    fig, ax = _figure()
    for i, (recipe, eig) in enumerate(spectra.items()):
        eig = np.sort(np.abs(np.asarray(eig, dtype=np.float64)))[::-1]
        eig = eig / max(eig.sum(), 1e-30)
        ax.plot(np.arange(1, len(eig) + 1), np.maximum(eig, 1e-12), marker="o", ms=3,
                color=f"C{i}", label=recipe)
    ax.set(title="latent covariance spectrum", xlabel="index", ylabel="share of variance")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def fig_histograms(histograms: dict[str, tuple[list[float], list[float]]], title: str,
                   xlabel: str) -> bytes:
    """Step histograms, one per recipe: {recipe: (bin edges (K+1,), counts (K,))}, each
    normalised to a density so recipes with different sample counts compare."""
    fig, ax = _figure()
    for i, (recipe, (edges, counts)) in enumerate(histograms.items()):
        edges, counts = np.asarray(edges, dtype=np.float64), np.asarray(counts, dtype=np.float64)
        density = counts / max(counts.sum() * np.diff(edges).mean(), 1e-30)
        ax.stairs(density, edges, color=f"C{i}", label=recipe, linewidth=1.5)
    ax.set(title=title, xlabel=xlabel, ylabel="density")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def fig_budget_curve(points: list[tuple[float, dict[str, list[float]]]], title: str,
                     xlabel: str) -> bytes:
    """FD∞ against a generator budget or size: one colour per recipe, its mean over seeds as a
    line and every seed as a dot. points: [(x, {recipe: values over seeds})], x increasing."""
    fig, ax = _figure(4.6, 3.4)
    recipes = list(dict.fromkeys(r for _, per in points for r in per))
    for i, recipe in enumerate(recipes):
        xs, means = [], []
        for x, per in points:
            values = per.get(recipe, [])
            if values:
                xs.append(x)
                means.append(float(np.mean(values)))
                ax.scatter([x] * len(values), values, color=f"C{i}", s=10, alpha=0.5)
        ax.plot(xs, means, "-o", color=f"C{i}", label=recipe, markersize=4)
    ax.set(title=title, xlabel=xlabel, ylabel="FD∞ (lower is better)")
    ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)
