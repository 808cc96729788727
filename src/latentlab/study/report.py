"""The study report: one self-contained HTML file that opens offline.

Everything is inline: CSS in a <style> element, every figure a base64 PNG data URI, no script
and no external URL. The report is built from `summary.json` and the run directories it names
(seed 0 of each recipe, or its first seed, for images and curves), and shows whatever they hold:
a section whose data no run has (scaling fits of a baseline-only study, codebook plots of a
continuous tokenizer) says so instead of drawing an empty plot.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from latentlab.io import write_text
from latentlab.study import plots
from latentlab.study.report_parts import _curve, _figure, _read_json, _Runs, grid_png
from latentlab.study.report_text import adherence_section
from latentlab.study.tables import (
    curve_table,
    fd_table,
    metrics_table,
    note,
    prediction_table,
    verdict_table,
)
from latentlab.training.rundir import read_metrics

TOKENIZER_LOSS = "loss/recon"
GENERATOR_LOSSES = ("loss/gen", "loss/nll", "loss/g")  # flow/ddpm/vpsde, ar, gan
DIAGNOSTICS = ("coupled/rho", "coupled/lambda", "coupled/l_pred", "latent/var_min",
               "latent/dead_channels")
CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.best { background: #e3f4e1; font-weight: bold; }
td.good { background: #e3f4e1; } td.bad { background: #f8e1e1; }
tr.group td { background: #f4f4f4; font-weight: bold; text-align: left; }
.grids { display: flex; flex-wrap: wrap; gap: 1.2em; }
figure { margin: 0.4em; } figcaption { font-size: 0.85em; color: #555; }
img { image-rendering: pixelated; max-width: 100%; }
.note { color: #777; font-style: italic; }
.prompts figcaption { max-width: 9em; }
"""


def samples_grid(path: Path, n: int = 100, scale: int = 3) -> bytes | None:
    """The first `n` images of a samples.npz as one PNG grid (10 per row: the labels cycle
    0..9, so a column is a class); None when the file holds vectors or nothing."""
    if not path.exists():
        return None
    with np.load(path) as f:
        if "images" not in f:
            return None
        images = f["images"][:n]
    return grid_png(images, scale=scale)


def _has_prompts(path: Path) -> bool:
    with np.load(path) as f:
        return "prompts" in f


def _grids(runs: _Runs) -> str:
    parts = []
    for recipe in runs.summary["recipes"]:
        entry = runs.first(recipe)
        figures = []
        recon = runs.path(entry, "tokenizer") / "samples" / "reconstructions.png"
        if recon.exists():
            figures.append(_figure(recon.read_bytes(), f"{recipe}: held-out originals (top) "
                                                       "and reconstructions (bottom)"))
        grid = samples_grid(runs.path(entry, "samples"))
        if grid:
            drawn = ("for the test captions in order" if _has_prompts(runs.path(entry, "samples"))
                     else "one class per column")
            figures.append(_figure(grid, f"{recipe}: generated samples (seed {entry['seed']}, "
                                         f"{drawn})"))
        parts.append(f"<h3>{html.escape(recipe)}</h3>"
                     + (f'<div class="grids">{"".join(figures)}</div>' if figures
                        else note("no images (vector data)")))
    return "".join(parts)


def _training_curves(runs: _Runs) -> str:
    figures = []
    tok = runs.curves(TOKENIZER_LOSS, "tokenizer")
    if tok:
        figures.append(_figure(plots.fig_curves(tok, "tokenizer reconstruction loss",
                                                TOKENIZER_LOSS, log_y=True),
                               "decomposer training: reconstruction loss per recipe"))
    gen = runs.curves(GENERATOR_LOSSES, "generator")
    if gen:
        figures.append(_figure(plots.fig_curves(gen, "generator training loss", "loss"),
                               "the same generator trained on each recipe's latent"))
    for key in DIAGNOSTICS:
        found = runs.curves(key, "tokenizer")
        if found:
            figures.append(_figure(plots.fig_curves(found, key, key), f"{key} during "
                                                                      "decomposer training"))
    for recipe in runs.summary["recipes"]:
        records = read_metrics(runs.path(runs.first(recipe), "tokenizer"))
        widths = sorted({k for r in records for k in r if k.startswith("tiny/loss_")},
                        key=lambda k: (len(k), k))  # loss_32 before loss_128
        tiny = {k.removeprefix("tiny/"): [c] for k in widths if (c := _curve(records, k))}
        if tiny:
            figures.append(_figure(plots.fig_curves(tiny, f"{recipe}: tiny generator losses",
                                                    "loss", log_y=True),
                                   f"{recipe}: loss of each tiny generator (by width)"))
    return f'<div class="grids">{"".join(figures)}</div>' if figures else note("no logs")


def _fit_row(recipe: str, fit: dict) -> str:
    cells = [html.escape(recipe), html.escape(str(fit.get("series", ""))),
             str(fit.get("step", "")), "yes" if fit.get("ok", True) else "no"]
    if fit.get("ok", True):
        residual = max((abs(x) for x in fit.get("residuals") or [0.0]), default=0.0)
        cells += [f"{fit.get(k, float('nan')):.4g}" for k in ("E", "A", "alpha", "predicted")]
        cells += [f"{residual:.2%}", ""]
    else:
        cells += ["—"] * 5 + [html.escape(str(fit.get("reason", "")))]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _scaling(runs: _Runs) -> str:
    """Per coupled recipe, its last scaling-law fits (one per time bin), plotted and tabled."""
    figures, rows = [], []
    for recipe in runs.summary["recipes"]:
        metrics = _read_json(runs.path(runs.first(recipe), "tokenizer") / "metrics.json")
        records = [r for r in metrics.get("scaling_fits") or [] if isinstance(r, dict)]
        if not records:
            continue
        last = max(r.get("step", 0) for r in records)
        fits = {str(r.get("series", i)): r for i, r in enumerate(records)
                if r.get("step", 0) == last}
        figures.append(_figure(plots.fig_scaling(fits, f"{recipe}: fits at step {last}"),
                               f"{recipe}: tiny-generator losses and L(N) = E + A (N / "
                               "n_ref)^-alpha extrapolated to N_big (first seed)"))
        rows += [_fit_row(recipe, fit) for fit in fits.values()]
    if not figures:
        return note("no scaling-law fits: no recipe in this study trains tiny generators")
    table = ("<table><tr><th>recipe</th><th>series</th><th>step</th><th>accepted</th>"
             "<th>E</th><th>A</th><th>alpha</th><th>predicted L(N_big)</th>"
             f"<th>max |residual|</th><th>why refused</th></tr>{''.join(rows)}</table>")
    return f'<div class="grids">{"".join(figures)}</div>{table}'


def _budget_curves(summary: dict) -> str:
    """FD∞ per view against generator steps and against generator width, and the verdicts."""
    curves = summary.get("curves")
    if not curves:
        return note("no curves: set curves.generator_steps or curves.generator_widths")
    main = next(p for p in curves.values() if p["main"])
    figures = []
    for axis, other in (("steps", "width"), ("width", "steps")):
        points = sorted((p for p in curves.values() if p[other] == main[other]),
                        key=lambda p: p[axis])
        if len(points) < 2:
            continue
        for view in points[0]["fd_inf"]:
            data = [(p[axis], {r: f["values"] for r, f in p["fd_inf"][view].items()})
                    for p in points]
            figures.append(_figure(
                plots.fig_budget_curve(data, f"FD∞ {view}", f"generator {axis}"),
                f"{view}: FD∞ against generator {axis} ({other} {main[other]})"))
    return f'<div class="grids">{"".join(figures)}</div>{curve_table(summary)}'


def _bars(summary: dict, match, title: str, caption: str) -> str | None:
    values = {}
    for name, per_recipe in summary["metrics"].items():
        if match(name):
            values[name.split("/", 1)[-1]] = {r: (f["mean"], f["std"])
                                              for r, f in per_recipe.items() if f}
    return _figure(plots.fig_bars(values, title), caption) if values else None


def _latent(runs: _Runs) -> str:
    summary, parts = runs.summary, []
    lipschitz = _bars(summary, lambda n: "lipschitz" in n, "Lipschitz complexity",
                      "ratios of output to input distances over sampled pairs (lower is "
                      "smoother); mean ± std over seeds")
    parts.append(lipschitz or note("no Lipschitz estimates in this study's evaluation"))
    spectra, cosines = {}, {}
    for recipe in summary["recipes"]:
        found = runs.tokenizer_eval(recipe)
        eig = _numbers(found.get("eigenvalues"))
        if eig:
            spectra[recipe] = eig
        hist = _histogram(found.get("cosine_histogram"))
        if hist:
            cosines[recipe] = hist
    if spectra:
        parts.append(_figure(plots.fig_eigenvalues(spectra), "eigenvalue decay of the latent "
                                                             "covariance (first seed)"))
    if cosines:
        parts.append(_figure(plots.fig_histograms(cosines, "pairwise cosine similarity of "
                                                           "latents", "cosine"),
                             "pairwise cosine similarity of latents (first seed)"))
    if not (spectra or cosines):
        parts.append(note("no latent spectra or cosine histograms in this study's evaluation"))
    return f'<div class="grids">{"".join(parts)}</div>'


def _codebook(summary: dict) -> str:
    parts = [_bars(summary, lambda n, k=k: n.split("/")[-1] == k, k, f"codebook {k}")
             for k in ("usage", "perplexity")]
    parts = [p for p in parts if p]
    return (f'<div class="grids">{"".join(parts)}</div>' if parts
            else note("continuous latents: no codebook"))


def _numbers(value) -> list[float] | None:
    if isinstance(value, dict):
        value = value.get("values")
    if isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
        return [float(v) for v in value]
    return None


def _histogram(value) -> tuple[list[float], list[float]] | None:
    """(edges, counts) of a histogram stored as {'edges'|'bins', 'counts'} or as bare counts
    over [-1, 1]."""
    if isinstance(value, dict):
        counts = _numbers(value.get("counts"))
        edges = _numbers(value.get("edges") or value.get("bins"))
    else:
        counts, edges = _numbers(value), None
    if not counts:
        return None
    if not edges or len(edges) != len(counts) + 1:
        edges = list(np.linspace(-1.0, 1.0, len(counts) + 1))
    return edges, counts


def write_report(summary: dict, out_dir: str | Path) -> Path:
    """Write OUT/report.html for the study summarised by `summary` (runs under `out_dir`)."""

    out = Path(out_dir)
    runs = _Runs(summary, out)
    b = summary["budgets"]
    intro = (f"<p>Dataset <b>{html.escape(summary['dataset'])}</b>; recipes "
             f"{html.escape(', '.join(summary['recipes']))} (reference: "
             f"{html.escape(summary['reference'])}); seeds {summary['seeds']}. Equal budgets for "
             f"every recipe: tokenizer {b['tokenizer_steps']} steps × {b['tokenizer_batch_size']}"
             f", generator ({html.escape(str(b['generator_family']))}) {b['generator_steps']} "
             f"steps × {b['generator_batch_size']}, {b['samples']} samples scored.</p>")
    judges = summary.get("judges") or {}
    if judges:
        known = ", ".join(f"{k} {v:.3f}" for k, v in judges.items()
                          if isinstance(v, float) and v == v)
        intro += (f"<p>Generation metrics are measured in the views "
                  f"{html.escape(', '.join(summary.get('views') or []))} (docs/metrics.md) "
                  f"against the {html.escape(str(summary.get('reference_split')))} split; "
                  f"held-out quality of the trained judges: {html.escape(known)}.</p>")
    sections = [("Verdicts", verdict_table(summary)),
                ("Fréchet distance per view, with floors", fd_table(summary)),
                ("Metrics", metrics_table(summary)),
                ("Prompt adherence", adherence_section(runs)),
                ("Reconstructions and samples", _grids(runs)),
                ("Training curves", _training_curves(runs)),
                ("Budget and size curves", _budget_curves(summary)),
                ("Scaling-law fits", _scaling(runs)),
                ("Predicted against actual big-generator loss", prediction_table(summary)),
                ("Latent complexity", _latent(runs)),
                ("Codebook", _codebook(summary))]
    body = "".join(f"<h2>{title}</h2>{content}" for title, content in sections)
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>latentlab study: {html.escape(summary['dataset'])}</title>"
            f"<style>{CSS}</style></head><body><h1>latentlab study: "
            f"{html.escape(summary['dataset'])}</h1>{intro}{body}</body></html>\n")
    return write_text(out / "report.html", page)
