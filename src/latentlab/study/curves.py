"""Curves, not points: every recipe's generator at other training budgets and other sizes.

A study's main generator is one point: `budget.generator_steps` steps at the configured width.
`curves.generator_steps` and `curves.generator_widths` add points on the same tokenizers and
seeds: a generator trained for each extra budget (at the main width) and one of each extra width
(at the main budget; heads keep the main head width), each sampled and scored like the main one.
The summary then holds, per point and view, every recipe's bias-corrected FD (FD∞) and its paired
comparison with the reference recipe, so the report shows where a recipe's advantage grows,
holds or fades.

Layout: OUT/runs/RECIPE/seedK/curve/steps600/ and .../curve/width64/, each a generator run with
its samples.npz and evaluation.json.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from latentlab.errors import ConfigError
from latentlab.evaluation.verdicts import compare, generation_verdict
from latentlab.evaluation.views import IMAGE_VIEWS
from latentlab.generators.autoregressive import ARConfig
from latentlab.generators.denoisers.dit import DiTConfig
from latentlab.io import write_json

CURVE_EVALUATION = "evaluation.json"


@dataclass
class CurveConfig:
    generator_steps: list[int] = field(default_factory=list)
    """Extra generator budgets (optimizer steps) trained on every tokenizer of the study."""
    generator_widths: list[int] = field(default_factory=list)
    """Extra generator widths (the transformer's token width) trained at the main budget."""

    def __post_init__(self):
        for name in ("generator_steps", "generator_widths"):
            values = getattr(self, name)
            if any(v < 1 for v in values) or len(set(values)) != len(values):
                raise ValueError(f"{name}: need distinct positive values, got {values}")


@dataclass(frozen=True)
class CurvePoint:
    """One extra generator: its name and what differs from the main one."""

    name: str
    steps: int
    width: int

    def generator(self, base):
        """The main generator run config `base` at this point's budget and width (a network
        without a transformer width, 0, keeps its own)."""
        net = generator_network(base)
        if self.width:
            head = net.width // net.heads
            net = dataclasses.replace(net, width=self.width, heads=max(1, self.width // head))
        return dataclasses.replace(
            base, train=dataclasses.replace(base.train, steps=self.steps),
            generator=dataclasses.replace(base.generator, network=net))


def generator_network(run) -> DiTConfig | ARConfig:
    """The network of a generator run config (a study's generator is a DiT unless its config
    names another network)."""
    return run.generator.network or DiTConfig()


def transformer_width(run) -> int:
    """The token width of a generator run's transformer (dit, ar, maskgit); 0 for a network
    without one (pixelcnn, gan, mlp), whose curves vary the budget only."""
    net = generator_network(run)
    return net.width if hasattr(net, "width") and hasattr(net, "heads") else 0


def curve_points(curves: CurveConfig, steps: int, width: int) -> list[CurvePoint]:
    """The extra points around the main (steps, width); ConfigError when widths are asked of
    a network without a transformer width (`width` 0)."""
    if curves.generator_widths and not width:
        raise ConfigError("curves.generator_widths: the study's generator network has no "
                          "transformer width to vary (dit, ar and maskgit have one)")
    return ([CurvePoint(f"steps{s}", s, width) for s in curves.generator_steps if s != steps]
            + [CurvePoint(f"width{w}", steps, w) for w in curves.generator_widths
               if w != width])


def run_point(root: Path, point: CurvePoint, gen, samples: int, seed: int,
              cache_dir: str | None, reusable, mode) -> dict:
    """Train (unless reusable) and score one curve point of one run; its generation figures."""
    from latentlab.evaluation.generator import evaluate_generator_run
    from latentlab.generation.config import GeneratorRunConfig
    from latentlab.generation.train import train_generator

    path = root / "curve" / point.name
    cfg = point.generator(gen)
    fresh = not reusable(path, cfg, GeneratorRunConfig)
    evaluation = path / CURVE_EVALUATION
    if fresh:
        evaluation.unlink(missing_ok=True)
        train_generator(cfg, path, mode(path))
    asked = {"samples": samples, "seed": seed}
    if evaluation.exists():
        stored = json.loads(evaluation.read_text())
        if {k: stored.get(k) for k in asked} == asked:
            return stored["generation"]
    found = evaluate_generator_run(path, n=samples, cache_dir=cache_dir, seed=seed)
    write_json(evaluation, asked | {"generation": found})
    return found


def summarize_curves(points: dict[str, dict[str, dict[int, dict]]], recipes: list[str],
                     where: dict[str, CurvePoint], main: str) -> dict:
    """Per point, view and recipe: FD∞ mean and values over seeds; per point and recipe the
    paired comparison with the first recipe in each view, and the generation verdict.

    Args:
        points: {point name: {recipe: {seed: generation figures}}}, the main point included.
        where: every point by name.
        main: the main point's name.
    """
    out: dict[str, dict] = {}
    for name, per_recipe in points.items():
        entry: dict = {"main": name == main, "steps": where[name].steps,
                       "width": where[name].width, "fd_inf": {}, "comparisons": {},
                       "verdicts": {}}
        values = {view: {r: {s: g[f"fd_inf/{view}"] for s, g in seeds.items()
                             if f"fd_inf/{view}" in g}
                         for r, seeds in per_recipe.items()} for view in IMAGE_VIEWS}
        for view, per in values.items():
            entry["fd_inf"][view] = {r: {"mean": statistics.fmean(v.values()),
                                         "values": list(v.values()), "seeds": list(v)}
                                     for r, v in per.items() if v}
        for recipe in recipes[1:]:
            found = {view: compare(per.get(recipes[0], {}), per.get(recipe, {}), "lower")
                     for view, per in values.items()}
            entry["comparisons"][recipe] = {v: c.as_dict() if c else None
                                            for v, c in found.items()}
            entry["verdicts"][recipe] = generation_verdict(found)
        out[name] = entry
    return out
