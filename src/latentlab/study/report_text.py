"""The prompt-adherence section of the study report, for text-conditioned generators: per
recipe the accuracy of each attribute the prompts state and the all-correct rate (seen and
held-out prompts, `evaluation.prompts`), then a grid of each recipe's first samples, each
captioned with its prompt."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from latentlab.evaluation.verdicts import Comparison
from latentlab.study.report_parts import _figure, _Runs, grid_png
from latentlab.study.tables import _fmt, note

ACCURACY = "generation/adherence/accuracy/"
ALL_CORRECT = "generation/adherence/all_correct"
PROMPTED = 12  # samples shown per recipe in the prompt grid
SHOWN = 64  # pixels a prompted sample is drawn at (about)


def _rate(pooled: dict | None) -> str:
    if not pooled:
        return "—"
    return (f"{pooled['rate']:.3f} [{pooled['low']:.3f}, {pooled['high']:.3f}] "
            f"(n {pooled['n']})")


def _versus(summary: dict, recipe: str) -> str:
    found = (summary.get("comparisons") or {}).get(ALL_CORRECT, {}).get(recipe)
    if found is None:
        return "<td>—</td>"
    verdict = found["verdict"] or ""
    return (f"<td>{html.escape(Comparison(**found).text())}<br><small>"
            f"{html.escape(verdict)}</small></td>")


def adherence_table(summary: dict) -> str:
    """One row per recipe: accuracy per attribute (mean ± std over seeds), the all-correct rate
    over every seed's samples with its 95 % Wilson interval, the same on held-out
    combinations where the data holds any out, and the paired comparison with the reference."""
    metrics, pooled = summary["metrics"], summary.get("adherence") or {}
    attributes = [n.removeprefix(ACCURACY) for n in metrics if n.startswith(ACCURACY)]
    if not (attributes or pooled):
        return note("no prompt adherence: no text-conditioned generator on data with "
                    "structured attributes (shapes)")
    heldout = any("heldout/all_correct" in p for p in pooled.values())
    head = "".join(f"<th>{html.escape(a)}</th>" for a in attributes)
    head += "<th>all correct</th>" + ("<th>held-out all correct</th>" if heldout else "")
    rows = []
    for recipe in summary["recipes"]:
        cells = [_fmt((metrics.get(ACCURACY + a) or {}).get(recipe)) for a in attributes]
        cells.append(_rate(pooled.get(recipe, {}).get("all_correct")))
        if heldout:
            cells.append(_rate(pooled.get(recipe, {}).get("heldout/all_correct")))
        rows.append(f"<tr><td>{html.escape(recipe)}</td>"
                    + "".join(f"<td>{c}</td>" for c in cells)
                    + (_versus(summary, recipe) if recipe != summary["reference"]
                       else "<td>reference</td>") + "</tr>")
    return (f"<table><tr><th>recipe</th>{head}<th>all correct vs "
            f"{html.escape(summary['reference'])}</th></tr>{''.join(rows)}</table>"
            "<p>The attribute judge reads each sample's objects; a sample is all correct when "
            "every attribute and relation its prompt states is right (as GenEval counts). "
            "Accuracies: mean ± std over seeds; all correct: over every seed's samples "
            "together, with its 95 % Wilson interval and the number of samples; the last "
            "column pairs the recipe's all-correct rate with the reference's by seed, with its "
            "95 % interval over seeds.</p>")


def _prompted(path: Path, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The first `n` images (N, H, W, C) uint8 of a samples.npz and their prompts; None when
    it has no prompts."""
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as f:
        if "images" not in f or "prompts" not in f:
            return None
        return f["images"][:n], f["prompts"][:n].astype(str)


def prompt_grid(runs: _Runs, n: int = PROMPTED) -> str:
    """Per recipe, the first `n` samples of its first seed, each captioned with its prompt."""
    parts = []
    for recipe in runs.summary["recipes"]:
        entry = runs.first(recipe)
        found = _prompted(runs.path(entry, "samples"), n)
        if found is None:
            continue
        images, prompts = found
        scale = max(1, SHOWN // images.shape[1])
        figures = "".join(_figure(grid_png(images[i:i + 1], 1, scale), prompt)
                          for i, prompt in enumerate(prompts))
        parts.append(f"<h3>{html.escape(recipe)}: samples and their prompts (seed "
                     f"{entry['seed']})</h3><div class=\"grids prompts\">{figures}</div>")
    return "".join(parts) or note("no samples with prompts (no text-conditioned generator)")


def adherence_section(runs: _Runs) -> str:
    """The adherence table, then the prompt grid."""
    return adherence_table(runs.summary) + prompt_grid(runs)
