"""`latentlab study`: every recipe x seed end to end, then one summary and one report.

The study directory:
    OUT/study.yaml                         the resolved study configuration
    OUT/generator.yaml                     the generator every recipe gets (the coupled
                                           recipes' big generator)
    OUT/runs/RECIPE/seedK/tokenizer/       the decomposer run (train-tokenizer's layout)
    OUT/runs/RECIPE/seedK/generator/       the generator on its latent, with samples.npz
    OUT/runs/RECIPE/seedK/evaluation.json  every figure of the run (and its series)
    OUT/runs/RECIPE/seedK/timing.json      seconds each stage took when it last ran
    OUT/runs/RECIPE/seedK/scaling.json     coupled recipes: predicted vs actual big-generator
                                           loss (`evaluation.scaling`)
    OUT/summary.json                       per metric and recipe: mean, std, values; budgets;
                                           prompt adherence pooled over seeds (text runs)
    OUT/report.html                        the self-contained report (`report.write_report`)

Re-running a study reuses what is finished: a stage whose run holds `metrics.json` (evaluation:
`evaluation.json`) made with the same configuration is skipped, so a killed study continues
where it stopped, and seeds or recipes added to the config train only what is new. A stage whose
configuration changed is trained again, with everything after it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from latentlab import config as C
from latentlab.data import load_dataset
from latentlab.errors import UserError
from latentlab.evaluation.perceptual import resolve_perceptual
from latentlab.evaluation.scaling import scaling_figures
from latentlab.evaluation.verdicts import Comparison, compare, generation_verdict, verdict_line
from latentlab.evaluation.views import IMAGE_VIEWS
from latentlab.generation.config import GeneratorRunConfig
from latentlab.generation.train import train_generator
from latentlab.io import write_json, write_text
from latentlab.recipes.train import TokenizerRunConfig, tokenizer_step_flops, train_tokenizer
from latentlab.study.config import StudyConfig, generator_run, tokenizer_run
from latentlab.study.curves import (
    CurvePoint,
    curve_points,
    run_point,
    summarize_curves,
    transformer_width,
)
from latentlab.study.evaluate import (
    ADHERENCE_JUDGE,
    GROUPS,
    direction,
    evaluate_run,
    pooled_adherence,
    run_metrics,
    stage_flops,
    verify_run,
)
from latentlab.training.progress import format_duration
from latentlab.training.rundir import CONFIG

log = logging.getLogger("latentlab")
STUDY, GENERATOR, SUMMARY = "study.yaml", "generator.yaml", "summary.json"
EVALUATION, TIMING = "evaluation.json", "timing.json"
STAGES = ("tokenizer", "generator", "evaluate")
# the version of what an evaluation measures: an evaluation.json of another is scored again
# (2: several views, FD-infinity and floors, density/coverage, the reference split; 3: a
# VAE's own prior sampled and scored beside its generator)
PROTOCOL = 3


@dataclass(frozen=True)
class StudyRun:
    """Where one recipe x seed lives in the study directory."""

    recipe: str
    seed: int
    root: Path

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def generator(self) -> Path:
        return self.root / "generator"

    @property
    def evaluation(self) -> Path:
        return self.root / EVALUATION


def plan(cfg: StudyConfig, out: Path) -> list[StudyRun]:
    """Every run of the study, seed-major so that early results cover every recipe."""
    return [StudyRun(r, s, out / "runs" / r.replace("+", "_") / f"seed{s}")
            for s in cfg.seeds for r in cfg.recipes]


class Clock:
    """Elapsed time and an ETA from how long the stages that already ran took."""

    def __init__(self, todo: list[tuple[str, str]]):
        self.todo = list(todo)  # (recipe, stage) of every stage still to do, in order
        self.took: dict[tuple[str, str], list[float]] = {}
        self.t0 = time.perf_counter()

    def done(self, recipe: str, stage: str, seconds: float | None) -> None:
        """Mark a stage finished; `seconds` is None for a reused one (no time measured)."""
        self.todo.remove((recipe, stage))
        if seconds is not None:
            self.took.setdefault((recipe, stage), []).append(seconds)

    def _guess(self, recipe: str, stage: str) -> float | None:
        # the same stage of the same recipe, else of any recipe (a recipe changes its cost)
        same = self.took.get((recipe, stage))
        other = [t for (_, s), ts in self.took.items() if s == stage for t in ts]
        found = same or other
        return statistics.fmean(found) if found else None

    def eta(self) -> float | None:
        guesses = [self._guess(r, s) for r, s in self.todo]
        return None if any(g is None for g in guesses) else sum(guesses)

    def line(self) -> str:
        eta = self.eta()
        shown = f"ETA {format_duration(eta)}" if eta is not None else "ETA after the first run"
        return f"elapsed {format_duration(time.perf_counter() - self.t0)}, {shown}"


def check_data(cfg: StudyConfig) -> None:
    """Load both splits once (a bad dataset fails here, before any training)."""
    for split in ("train", "test"):
        load_dataset(cfg.data.spec, split, skip_corrupt=cfg.data.skip_corrupt)


def _reusable(path: Path, want, cls: type, skip: tuple[str, ...] = ()) -> bool:
    """Whether the finished run in `path` was made by config `want` (logs why not)."""
    if not (path / "metrics.json").exists() or not (path / CONFIG).exists():
        return False
    found = C.first_difference(want, C.load(cls, path / CONFIG), skip=skip)
    if found:
        log.info("%s: %s is now %r (was %r); training it again", path, *found)
    return found is None


def _mode(path: Path) -> str:
    return "overwrite" if (path / CONFIG).exists() else "new"


def _record_time(run: StudyRun, stage: str, seconds: float) -> None:
    path = run.root / TIMING
    times = json.loads(path.read_text()) if path.exists() else {}
    write_json(path, times | {stage: seconds})


def _forget_after(run: StudyRun, stage: str) -> None:
    """Remove what was made from the stage about to be trained again: a study killed after
    retraining it must not reuse a generator or scores of the old one."""
    if stage == "tokenizer":
        for made in (run.generator, run.root / "curve"):
            if made.exists():
                shutil.rmtree(made)
    run.evaluation.unlink(missing_ok=True)


def _stage(run: StudyRun, stage: str, label: str, clock: Clock, work) -> None:
    """Run one stage with a progress line before it, and time it."""
    print(f"{label}: {stage} ({clock.line()})", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    work()
    seconds = time.perf_counter() - t0
    _record_time(run, stage, seconds)
    clock.done(run.recipe, stage, seconds)


def tokenizer_steps(cfg: StudyConfig, big_generator: Path) -> dict[str, int]:
    """Tokenizer steps per recipe: `budget.tokenizer_steps` for all, or with `equal_flops` for
    the most expensive recipe and proportionally more for the cheaper ones, so every tokenizer
    trains for the same FLOPs (`training.flops`; the tiny generators' cost included)."""
    steps = cfg.budget.tokenizer_steps
    if not cfg.budget.equal_flops:
        return dict.fromkeys(cfg.recipes, steps)
    flops = {r: tokenizer_step_flops(tokenizer_run(cfg, r, cfg.seeds[0], big_generator))
             for r in cfg.recipes}
    most = max(flops.values())
    found = {r: round(steps * most / f) for r, f in flops.items()}
    log.info("equal FLOPs: tokenizer steps %s (GFLOP per step %s)", found,
             {r: round(f / 1e9, 3) for r, f in flops.items()})
    return found


def run_one(cfg: StudyConfig, run: StudyRun, label: str, clock: Clock,
            big_generator: Path, steps: int = 0) -> dict:
    """Train, sample and score one recipe x seed, reusing finished stages; its evaluation.

    `big_generator` is the study's generator config (what the coupled recipes aim at); `steps`
    the tokenizer's (0: `budget.tokenizer_steps`).
    """
    tok = resolve_perceptual(tokenizer_run(cfg, run.recipe, run.seed, big_generator, steps),
                             cfg.evaluation.cache_dir or None)
    fresh = not _reusable(run.tokenizer, tok, TokenizerRunConfig)
    if fresh:
        _forget_after(run, "tokenizer")
        _stage(run, "tokenizer", label, clock,
               lambda: train_tokenizer(tok, run.tokenizer, _mode(run.tokenizer)))
    else:
        clock.done(run.recipe, "tokenizer", None)

    gen = generator_run(cfg, run.tokenizer.resolve(), run.seed)
    fresh = fresh or not _reusable(run.generator, gen, GeneratorRunConfig)
    if fresh:
        _forget_after(run, "generator")
        _stage(run, "generator", label, clock,
               lambda: train_generator(gen, run.generator, _mode(run.generator)))
    else:
        clock.done(run.recipe, "generator", None)

    asked = {"samples": cfg.budget.samples, "seed": run.seed,
             "probe_steps": cfg.evaluation.probe_steps, "protocol": PROTOCOL}
    if not fresh and run.evaluation.exists():
        stored = json.loads(run.evaluation.read_text())
        if {k: stored.get(k) for k in asked} == asked:
            clock.done(run.recipe, "evaluate", None)
            return stored["evaluation"]

    def score():
        found = evaluate_run(run.tokenizer, run.generator, cfg.budget.samples, run.seed,
                             cfg.evaluation.cache_dir or None, cfg.evaluation.probe_steps)
        write_json(run.evaluation, asked | {"evaluation": found})
    _stage(run, "evaluate", label, clock, score)
    return json.loads(run.evaluation.read_text())["evaluation"]


def _spread(values: dict[int, float]) -> dict:
    """Mean, sample standard deviation (0 for one seed), the values and their seeds."""
    std = statistics.stdev(values.values()) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values.values()), "std": std,
            "values": list(values.values()), "seeds": list(values)}


def compare_recipes(metrics: dict[str, dict], recipes: list[str]
                    ) -> tuple[dict[str, dict], dict[str, dict]]:
    """Paired comparisons of every recipe with the first over shared seeds, per metric, and
    each recipe's generation verdict (see `evaluation.verdicts`).

    Returns:
        ({metric: {recipe: Comparison as dict}}, {recipe: {"generation": verdict,
        "views": [...], "line": one-line summary}}).
    """
    reference, comparisons = recipes[0], {}
    for name, per_recipe in metrics.items():
        base = per_recipe.get(reference)
        comparisons[name] = {}
        for recipe in recipes[1:]:
            figure = per_recipe.get(recipe)
            if base and figure:
                found = compare(dict(zip(base["seeds"], base["values"], strict=True)),
                                dict(zip(figure["seeds"], figure["values"], strict=True)),
                                direction(name))
                comparisons[name][recipe] = found.as_dict() if found else None
    views = [v for v in IMAGE_VIEWS if f"generation/fd_inf/{v}" in metrics]
    verdicts = {}
    for recipe in recipes[1:]:
        per_view = {v: _comparison(comparisons[f"generation/fd_inf/{v}"].get(recipe))
                    for v in views}
        found = generation_verdict(per_view)
        verdicts[recipe] = {"generation": found, "views": views,
                            "line": verdict_line(recipe, reference, found, per_view)}
    return comparisons, verdicts


def _comparison(record: dict | None) -> Comparison | None:
    return Comparison(**record) if record else None


def summarize(cfg: StudyConfig, runs: list[StudyRun], evaluations: list[dict],
              out: Path) -> dict:
    """Per metric and recipe: mean, std and values over seeds; budgets; runs; directions."""
    per_run = [run_metrics(e) | {f"scaling/{k}": v for k, v in
                                 scaling_figures(verify_run(r.root)).items()}
               for r, e in zip(runs, evaluations, strict=True)]
    names = sorted({name for m in per_run for name in m},  # in pipeline order
                   key=lambda name: (GROUPS.index(name.split("/")[0]), name))
    metrics: dict[str, dict] = {}
    for name in names:
        metrics[name] = {}
        for recipe in cfg.recipes:
            values = {r.seed: m[name] for r, m in zip(runs, per_run, strict=True)
                      if r.recipe == recipe and name in m}
            metrics[name][recipe] = _spread(values) if values else None
    cost: dict[str, dict] = {}
    for recipe in cfg.recipes:
        times = [json.loads((r.root / TIMING).read_text()) for r in runs
                 if r.recipe == recipe and (r.root / TIMING).exists()]
        cost[recipe] = {f"{s}_s": statistics.fmean(t[s] for t in times if s in t)
                        for s in STAGES if any(s in t for t in times)}
        cost[recipe] |= stage_flops([r.root for r in runs if r.recipe == recipe])
    rel = lambda p: str(p.relative_to(out))  # noqa: E731 - paths stay valid if OUT moves
    comparisons, verdicts = compare_recipes(metrics, list(cfg.recipes))
    generation = next((e["generation"] for e in evaluations if "generation" in e), {})
    return {
        "dataset": cfg.data.spec,
        "recipes": list(cfg.recipes),
        "reference": cfg.recipes[0],
        "seeds": list(cfg.seeds),
        "budgets": dataclasses.asdict(cfg.budget) | {
            "tokenizer_batch_size": cfg.tokenizer.train.batch_size,
            "generator_batch_size": cfg.generator.train.batch_size,
            "tokenizer_preset": cfg.tokenizer_preset,
            "generator_family": cfg.generator.generator.family},
        "metrics": metrics,
        "directions": {name: direction(name) for name in names},
        "comparisons": comparisons,
        "verdicts": verdicts,
        "seconds": cost,
        "adherence": pooled_adherence(metrics, list(cfg.recipes)),
        "judges": {k: generation[k] for k in ("feature_net_accuracy", "ssl_retrieval",
                                              "ssl_knn_accuracy") if k in generation} | {
            f"attribute_judge/{k.removeprefix(ADHERENCE_JUDGE)}": v
            for k, v in generation.items() if k.startswith(ADHERENCE_JUDGE)},
        "reference_split": generation.get("reference"),
        "views": generation.get("views", []),
        "runs": {recipe: [{"seed": r.seed, "tokenizer": rel(r.tokenizer),
                           "generator": rel(r.generator),
                           "samples": rel(r.generator / "samples.npz"),
                           "evaluation": rel(r.evaluation)}
                          for r in runs if r.recipe == recipe] for recipe in cfg.recipes},
    }


def _prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not (out / STUDY).exists():
        raise UserError(f"{out}: not empty and not a study directory; choose another --out")
    if overwrite and out.exists():
        shutil.rmtree(out)


def run_study(cfg: StudyConfig, out: str | Path, overwrite: bool = False) -> dict:
    """Run the study `cfg` into `out` (reusing finished runs unless `overwrite`); its summary.

    Writes OUT/summary.json and OUT/report.html (see the module docstring).
    """
    from latentlab.study.report import write_report  # matplotlib: only once runs are done

    out = Path(out)
    check_data(cfg)
    _prepare(out, overwrite)
    write_text(out / STUDY, C.dump_yaml(cfg))
    write_text(out / GENERATOR, C.dump_yaml(generator_run(cfg, None, cfg.seeds[0])))
    runs = plan(cfg, out)
    clock = Clock([(r.recipe, s) for r in runs for s in STAGES])
    big = (out / GENERATOR).resolve()
    steps = tokenizer_steps(cfg, big)
    main = CurvePoint(f"steps{cfg.budget.generator_steps}", cfg.budget.generator_steps,
                      transformer_width(cfg.generator))
    points = curve_points(cfg.curves, main.steps, main.width)
    curves: dict[str, dict] = {p.name: {r: {} for r in cfg.recipes} for p in [main, *points]}
    evaluations = []
    for i, run in enumerate(runs, 1):
        label = f"[{i}/{len(runs)}] {run.recipe} seed {run.seed}"
        evaluations.append(run_one(cfg, run, label, clock, big, steps[run.recipe]))
        curves[main.name][run.recipe][run.seed] = evaluations[-1]["generation"]
        gen = generator_run(cfg, run.tokenizer.resolve(), run.seed)
        for point in points:
            print(f"{label}: curve point {point.name}", file=sys.stderr, flush=True)
            curves[point.name][run.recipe][run.seed] = run_point(
                run.root, point, gen, cfg.budget.samples, run.seed,
                cfg.evaluation.cache_dir or None, _reusable, _mode)
    summary = summarize(cfg, runs, evaluations, out)
    if points:
        summary["curves"] = summarize_curves(curves, list(cfg.recipes),
                                             {p.name: p for p in [main, *points]}, main.name)
    write_json(out / SUMMARY, summary)
    report = write_report(summary, out)
    print(f"study finished in {format_duration(time.perf_counter() - clock.t0)}: {report}",
          file=sys.stderr, flush=True)
    return summary


def headline(summary: dict) -> list[str]:
    """One verdict line per recipe against the reference, e.g. 'coupled vs baseline:
    generation worse (FD∞ pixels 1.30x [1.20, 1.50], ...)' (see `evaluation.verdicts`)."""
    return [v["line"] for v in summary.get("verdicts", {}).values()]
