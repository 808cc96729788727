"""Paired comparisons of a recipe with the reference recipe over shared seeds, and verdicts.

For one metric, recipe x and reference r, measured with the same seeds s = 1..n (same data
order, same evaluation draws), the per-seed differences are

    d_s = log(x_s / r_s)   when every value is positive (kind "ratio", estimate exp(mean d)),
    d_s = x_s - r_s        otherwise (kind "difference", estimate mean d).

The 95 % interval is mean(d) +- t_{n-1, 0.975} SE, with SE the bootstrap standard error of
mean(d) (resampling seeds with replacement) rescaled by sqrt(n / (n - 1)), which removes the
bootstrap's plug-in shrinkage (Hesterberg 2015, "What teachers should know about the
bootstrap"). With the 2 to 5 seeds a study affords, plain percentile-bootstrap intervals cover
far less than 95 % (three paired values have ten distinct resamples); the Student-t width keeps
the stated coverage, and with two seeds it is wide on purpose. A ratio interval is the
exponential of the log interval.

A verdict per metric: "better" or "worse" when the interval excludes no difference (1 for a
ratio, 0 for a difference), in the metric's direction; "no significant difference" otherwise.
A recipe generates better only when FD-infinity is significantly better in every view a
verdict needs (`evaluation.views.IMAGE_VIEWS`, those the data has), worse when it is
significantly worse in any; otherwise "views disagree" (some better, none worse) or "no
significant difference" (none either way).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from scipy import stats

BOOTSTRAP = 10_000
LEVEL = 0.95
BETTER, WORSE, SAME, DISAGREE = ("better", "worse", "no significant difference",
                                 "views disagree")
ONE_SEED = "one seed: no interval"


@dataclass(frozen=True)
class Comparison:
    """A recipe against the reference on one metric, over `n` shared seeds."""

    kind: str  # "ratio" or "difference"
    estimate: float
    low: float | None  # the 95 % interval; None with one seed
    high: float | None
    n: int
    verdict: str | None  # None for a metric without a direction

    def as_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        """'1.32x [1.10, 1.58]' or '+0.012 [-0.004, 0.028]'."""
        if self.kind == "ratio":
            interval = f" [{self.low:.2f}, {self.high:.2f}]" if self.low is not None else ""
            return f"{self.estimate:.2f}x{interval}"
        interval = f" [{self.low:+.3g}, {self.high:+.3g}]" if self.low is not None else ""
        return f"{self.estimate:+.3g}{interval}"


def paired_interval(reference: list[float], values: list[float], seed: int = 0,
                    level: float = LEVEL) -> tuple[str, float, float | None, float | None]:
    """(kind, estimate, low, high) of `values` against `reference`, paired by position (see the
    module docstring); low and high are None for a single pair."""
    assert len(reference) == len(values) >= 1, (
        f"need equal, non-empty paired lists, got {len(reference)} and {len(values)}")
    ratio = all(v > 0 for v in reference + values)
    ref, val = torch.tensor(reference, dtype=torch.float64), torch.tensor(values,
                                                                          dtype=torch.float64)
    d = (val / ref).log() if ratio else val - ref
    n, mean = len(d), float(d.mean())
    back = math.exp if ratio else (lambda v: v)
    if n < 2:
        return ("ratio" if ratio else "difference"), back(mean), None, None
    g = torch.Generator().manual_seed(seed)
    resampled = d[torch.randint(n, (BOOTSTRAP, n), generator=g)].mean(1)
    se = float(resampled.std()) * math.sqrt(n / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * se
    return ("ratio" if ratio else "difference"), back(mean), back(mean - half), back(mean + half)


def verdict(kind: str, low: float | None, high: float | None, direction: str | None
            ) -> str | None:
    """better / worse / no significant difference for an interval, by the metric's direction."""
    if direction is None:
        return None
    if low is None:
        return ONE_SEED
    null = 1.0 if kind == "ratio" else 0.0
    if high < null:
        return BETTER if direction == "lower" else WORSE
    if low > null:
        return WORSE if direction == "lower" else BETTER
    return SAME


def compare(reference: dict[int, float], values: dict[int, float], direction: str | None,
            seed: int = 0) -> Comparison | None:
    """A recipe's {seed: value} against the reference's, over the seeds both have."""
    seeds = sorted(set(reference) & set(values))
    if not seeds:
        return None
    kind, estimate, low, high = paired_interval([reference[s] for s in seeds],
                                                [values[s] for s in seeds], seed)
    return Comparison(kind, estimate, low, high, len(seeds),
                      verdict(kind, low, high, direction))


def generation_verdict(per_view: dict[str, Comparison | None]) -> str:
    """The generation verdict of a recipe from its FD-infinity comparisons in the required
    views (see the module docstring)."""
    found = [c.verdict if c else None for c in per_view.values()]
    if not found or any(v is None or v == ONE_SEED for v in found):
        return ONE_SEED if ONE_SEED in found else SAME
    if WORSE in found:
        return WORSE
    if all(v == BETTER for v in found):
        return BETTER
    return DISAGREE if BETTER in found else SAME


def verdict_line(recipe: str, reference: str, verdict_: str,
                 per_view: dict[str, Comparison | None]) -> str:
    """'coupled vs baseline: generation worse (FD∞ pixels 1.30x [1.20, 1.50], ssl 1.10x
    [0.90, 1.30], classifier 0.80x [0.70, 0.90]: views disagree)'."""
    parts = ", ".join(f"{view} {c.text()}" if c else f"{view} —" for view, c in per_view.items())
    verdicts = {c.verdict for c in per_view.values() if c}
    mixed = verdict_ == WORSE and BETTER in verdicts
    return (f"{recipe} vs {reference}: generation {verdict_} (FD∞ {parts}"
            f"{': views disagree' if mixed else ''})")
