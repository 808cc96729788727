"""The tables of the study report, built from `summary.json` alone: the verdicts, Fréchet
distance per view beside its floors, and every metric per recipe."""

from __future__ import annotations

import html

from latentlab.evaluation.verdicts import Comparison


def note(text: str) -> str:
    """An italic remark in place of a table or figure the study has no data for."""
    return f'<p class="note">{html.escape(text)}</p>'


def _fmt(figure: dict | None) -> str:
    if figure is None:
        return "—"
    return f"{figure['mean']:.4g} ± {figure['std']:.2g}"


def metrics_table(summary: dict) -> str:
    """Metrics as rows, recipes as columns, mean ± std over seeds; the best value of each row
    (by the metric's direction) is marked."""
    recipes = summary["recipes"]
    head = "".join(f"<th>{html.escape(r)}</th>" for r in recipes)
    rows, group = [], None
    for name, per_recipe in summary["metrics"].items():
        section = name.split("/")[0]
        if section != group:
            group = section
            rows.append(f'<tr class="group"><td colspan="{len(recipes) + 2}">'
                        f"{html.escape(section)}</td></tr>")
        way = summary["directions"].get(name)
        means = {r: f["mean"] for r, f in per_recipe.items() if f is not None}
        best = None
        if way and len(means) > 1 and len(set(means.values())) > 1:
            best = (min if way == "lower" else max)(means, key=means.get)
        cells = "".join(f'<td class="best">★ {_fmt(per_recipe.get(r))}</td>' if r == best
                        else f"<td>{_fmt(per_recipe.get(r))}</td>" for r in recipes)
        arrow = {"lower": "↓ lower", "higher": "↑ higher"}.get(way, "")
        rows.append(f"<tr><td>{html.escape(name.split('/', 1)[-1])}</td><td>{arrow}</td>"
                    f"{cells}</tr>")
    seconds = summary.get("seconds", {})
    stages = sorted({s for per in seconds.values() for s in per})
    if stages:
        rows.append(f'<tr class="group"><td colspan="{len(recipes) + 2}">cost (mean per run: '
                    f"wall time in s, training FLOPs, steps; not a quality metric)</td></tr>")
    for stage in stages:
        cells = "".join(f"<td>{seconds.get(r, {}).get(stage, float('nan')):.4g}</td>"
                        for r in recipes)
        rows.append(f"<tr><td>{html.escape(stage)}</td><td></td>{cells}</tr>")
    return (f"<table><tr><th>metric</th><th>better</th>{head}</tr>{''.join(rows)}</table>"
            "<p>★ marks the best mean of each row; ± is the standard deviation over seeds.</p>")


def _verdict_class(verdict: str | None) -> str:
    return {"better": "good", "worse": "bad"}.get(verdict or "", "")


def verdict_table(summary: dict) -> str:
    """One row per recipe against the reference: its generation verdict and, per view, the
    paired FD-infinity comparison with its 95 % interval over seeds."""
    verdicts = summary.get("verdicts") or {}
    if not verdicts:
        return note("one recipe: nothing to compare")
    views = next(iter(verdicts.values()))["views"]
    ref, comparisons = summary["reference"], summary.get("comparisons", {})
    head = "".join(f"<th>FD∞ {html.escape(v)}</th>" for v in views)
    rows = []
    for recipe, found in verdicts.items():
        cells = []
        for view in views:
            c = comparisons.get(f"generation/fd_inf/{view}", {}).get(recipe)
            if c is None:
                cells.append("<td>—</td>")
                continue
            text = Comparison(**c).text()
            cells.append(f'<td class="{_verdict_class(c["verdict"])}">{html.escape(text)}'
                         f"<br><small>{html.escape(c['verdict'] or '')}</small></td>")
        accuracy = comparisons.get("generation/class_accuracy", {}).get(recipe)
        cells.append(f"<td>{html.escape(Comparison(**accuracy).text())}<br><small>"
                     f"{html.escape(accuracy['verdict'] or '')}</small></td>" if accuracy
                     else "<td>—</td>")
        rows.append(f"<tr><td>{html.escape(recipe)} vs {html.escape(ref)}</td>"
                    f'<td class="{_verdict_class(found["generation"])}"><b>'
                    f"{html.escape(found['generation'])}</b></td>{''.join(cells)}</tr>")
    n = len(summary["seeds"])
    return (f"<table><tr><th>recipe</th><th>generation</th>{head}<th>class accuracy</th></tr>"
            f"{''.join(rows)}</table><p>FD∞: bias-corrected Fréchet distance; each cell is "
            f"the recipe over the reference paired by seed (a ratio, or a difference where a "
            f"value is not positive) with its 95 % interval over {n} seed(s) (Student-t with "
            f"a bootstrap standard error). A recipe generates better only when FD∞ is "
            f"significantly better in every view, worse when significantly worse in any.</p>")


def fd_table(summary: dict) -> str:
    """Per view: raw FD and FD-infinity of each recipe beside the real-vs-real floors."""
    metrics, recipes = summary["metrics"], summary["recipes"]
    views = summary.get("views") or []
    if not views:
        return note("no per-view figures in this study's evaluation")

    def cell(name: str, recipe: str) -> str:
        return f"<td>{_fmt(metrics.get(name, {}).get(recipe))}</td>"

    head = "".join(f"<th>{html.escape(r)}</th>" for r in recipes)
    rows = []
    for view in views:
        for key, floor, label in (("fd_inf", "fd_inf_floor", "FD∞"),
                                  ("fd", "fd_floor", "FD (raw)")):
            floor_of = metrics.get(f"generation/{floor}/{view}", {}).get(recipes[0])
            rows.append(f"<tr><td>{html.escape(view)}</td><td>{label}</td>"
                        + "".join(cell(f"generation/{key}/{view}", r) for r in recipes)
                        + f"<td>{_fmt(floor_of)}</td></tr>")
        if any(metrics.get(f"prior/fd_inf/{view}", {}).get(r) for r in recipes):
            rows.append(f"<tr><td>{html.escape(view)}</td><td>FD∞ of the VAE's prior</td>"
                        + "".join(cell(f"prior/fd_inf/{view}", r) for r in recipes)
                        + "<td></td></tr>")
    return (f"<table><tr><th>view</th><th>figure</th>{head}<th>real vs real floor</th></tr>"
            f"{''.join(rows)}</table><p>Mean ± std over seeds. The raw FD compares "
            "min(samples, half the reference) samples with one half of the reference set; "
            "its floor is the other half against the same half, what a perfect generator "
            "reads at that size. FD∞ extrapolates to infinitely many items (Chong & Forsyth "
            "2020); its floor, two real halves, is about 0 and shows its noise. For a VAE "
            "tokenizer, the prior's row scores decoded N(0, I) draws, the textbook VAE "
            "sampler: what the latent generator adds is the gap to it.</p>")


def prediction_table(summary: dict) -> str:
    """Per coupled recipe (means over seeds): the big generator's held-out loss per t-bin as
    the tiny generators predicted it and as it came out, the error, and the rho the decoder
    was given against the rho the actual loss implies; then whether the recipes' latents rank
    the same by predicted and by actual loss."""
    metrics = summary["metrics"]
    bins = sorted({int(n.rsplit("_t", 1)[1]) for n in metrics if n.startswith("scaling/error_t")})
    recipes = [r for r in summary["recipes"] if (metrics.get("scaling/abs_error") or {}).get(r)]
    if not bins or not recipes:
        return note("no recipe in this study predicts its big generator's loss")

    def mean(name: str, recipe: str) -> float:
        return (metrics.get(name) or {}).get(recipe, {}).get("mean", float("nan"))

    rows = []
    for recipe in recipes:
        for b in bins:
            cells = [f"{mean(f'scaling/{k}_t{b}', recipe):.4g}" for k in ("predicted", "actual")]
            cells.append(f"{mean(f'scaling/error_t{b}', recipe):+.1%}")
            cells += [f"{mean(f'scaling/{k}_t{b}', recipe):.3f}" for k in ("rho", "rho_implied")]
            rows.append(f"<tr><td>{html.escape(recipe)}</td><td>t-bin {b}</td>"
                        + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    predicted = {r: mean("scaling/predicted_mean", r) for r in recipes}
    actual = {r: mean("scaling/actual_mean", r) for r in recipes}
    same = sorted(recipes, key=predicted.get) == sorted(recipes, key=actual.get)
    ranking = ""
    if len(recipes) > 2:
        from scipy.stats import spearmanr

        found = spearmanr([predicted[r] for r in recipes], [actual[r] for r in recipes])
        ranking = (f"<p>Ranking of the recipes' latents by predicted loss "
                   f"{'matches' if same else 'does not match'} the ranking by actual loss "
                   f"({len(recipes)} recipes; Spearman rank correlation "
                   f"{found.statistic:.2f}, p = {found.pvalue:.2g}).</p>")
    return ("<table><tr><th>recipe</th><th>t-bin</th><th>predicted</th><th>actual</th>"
            "<th>error</th><th>rho used</th><th>rho implied</th></tr>"
            f"{''.join(rows)}</table>{ranking}"
            + note("Held-out flow loss of the big generator (null class) on the latents of the "
                   "first test items, under the same draws as the tiny generators were scored "
                   "with (evaluation.scaling); means over seeds."))


def curve_table(summary: dict) -> str:
    """Per curve point (generator steps and width) and recipe: the generation verdict against
    the reference and the FD∞ comparison in each view."""
    curves = summary.get("curves") or {}
    recipes = summary["recipes"][1:]
    rows = []
    for point in sorted(curves.values(), key=lambda p: (p["width"], p["steps"])):
        for recipe in recipes:
            found = point["comparisons"].get(recipe, {})
            cells = "".join(f"<td>{_comparison_text(found.get(v))}</td>" for v in found)
            verdict = point["verdicts"].get(recipe)
            rows.append(f"<tr><td>{point['steps']}</td><td>{point['width']}</td>"
                        f"<td>{html.escape(recipe)}</td><td class=\"{_verdict_class(verdict)}\">"
                        f"{html.escape(str(verdict))}</td>{cells}</tr>")
    views = next(iter(curves.values()))["fd_inf"] if curves else {}
    head = "".join(f"<th>FD∞ {html.escape(v)}</th>" for v in views)
    return (f"<table><tr><th>generator steps</th><th>width</th><th>recipe</th><th>verdict</th>"
            f"{head}</tr>{''.join(rows)}</table>")


def _comparison_text(found: dict | None) -> str:
    return Comparison(**found).text() if found else "—"
