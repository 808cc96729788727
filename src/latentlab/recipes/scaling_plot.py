"""The plot of `latentlab scaling`: held-out loss against parameters, the fitted law, the
prediction and, verified, the actual loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from latentlab.io import atomic_path
from latentlab.recipes.scaling import PowerLaw


def save_plot(result: dict, law: PowerLaw | None, path: Path) -> Path:
    """Log-log plot of held-out loss against parameters, with the fitted law extended to the
    predicted size, the prediction and (verified) the actual loss; written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FormatStrFormatter

    pred = result["predict"]
    figure = Figure(figsize=(6, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    losses = [np.nan if v is None else v for v in result["losses"]]
    axes.loglog(result["parameters"], losses, "o", color="C0",
                label="tiny generators (held out)")
    if law is not None:
        grid = np.geomspace(min(result["parameters"]) / 1.2, pred["parameters"] * 1.2, 100)
        axes.loglog(grid, [law(v) for v in grid], "-", color="C0", alpha=0.6,
                    label=f"fit E={law.E:.4g}, A={law.A:.3g}, α={law.alpha:.3g}")
        axes.loglog([pred["parameters"]], [pred["predicted_loss"]], "*", color="C1",
                    markersize=12, label=f"predicted at width {pred['width']}")
        axes.axhline(law.E, color="C0", linestyle=":", linewidth=1, label="E (no size removes)")
    if pred["actual_loss"] is not None:
        axes.loglog([pred["parameters"]], [pred["actual_loss"]], "s", color="C2",
                    label=f"actual at width {pred['width']}")
    title = f"{result['setup']['family']} on {Path(result['setup']['cache']).name}"
    if pred["relative_error"] is not None:
        title += f": prediction off by {pred['relative_error']:+.1%}"
    elif result["fit"] is None:
        title += ": no fit"
    for axis in (axes.yaxis.set_major_formatter, axes.yaxis.set_minor_formatter):
        axis(FormatStrFormatter("%.3g"))  # a narrow loss range: plain numbers, not 1.3x10^0
    axes.set(title=title, xlabel="parameters N", ylabel=f"held-out {result['setup']['loss']}")
    axes.legend(fontsize="small")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    return path
