"""Paired intervals over seeds and the verdicts a study draws from them."""

from __future__ import annotations

import math

import pytest
import torch

from latentlab.evaluation.verdicts import (
    BETTER,
    DISAGREE,
    ONE_SEED,
    SAME,
    WORSE,
    compare,
    generation_verdict,
    paired_interval,
    verdict_line,
)


@pytest.mark.parametrize("seeds", [3, 5])
def test_the_interval_covers_the_true_ratio_in_at_least_90_percent_of_trials(seeds):
    g = torch.Generator().manual_seed(0)
    true_ratio, trials, covered = 0.8, 400, 0
    for trial in range(trials):
        reference = torch.exp(torch.randn(seeds, generator=g) * 0.3)  # seeds differ a lot
        values = reference * true_ratio * torch.exp(torch.randn(seeds, generator=g) * 0.1)
        kind, _, low, high = paired_interval(reference.tolist(), values.tolist(), seed=trial)
        assert kind == "ratio"
        covered += low <= true_ratio <= high
    assert covered / trials >= 0.9, covered / trials


def test_paired_interval_of_differences_when_a_value_is_not_positive():
    kind, estimate, low, high = paired_interval([0.1, -0.2, 0.3], [0.6, 0.3, 0.8])
    assert kind == "difference" and estimate == pytest.approx(0.5)
    assert low == pytest.approx(0.5) and high == pytest.approx(0.5)  # every seed +0.5
    kind, estimate, low, high = paired_interval([2.0], [1.0])
    assert (kind, estimate, low, high) == ("ratio", 0.5, None, None)


def test_two_seeds_give_a_wide_interval():
    _, estimate, low, high = paired_interval([1.0, 1.0], [0.8, 0.9])
    assert estimate == pytest.approx(math.sqrt(0.72))
    assert low < 0.6 and high > 1.0  # t with 1 degree of freedom: 12.7 standard errors


def test_verdicts_follow_the_metric_direction():
    ref = {0: 1.0, 1: 1.1, 2: 0.9}
    lower = {s: 0.5 * v * (1 + 0.01 * s) for s, v in ref.items()}
    assert compare(ref, lower, "lower").verdict == BETTER
    assert compare(ref, lower, "higher").verdict == WORSE
    noisy = {0: 0.7, 1: 1.5, 2: 0.95}
    assert compare(ref, noisy, "lower").verdict == SAME
    assert compare(ref, lower, None).verdict is None
    assert compare({0: 1.0}, {0: 0.5}, "lower").verdict == ONE_SEED
    assert compare(ref, {5: 1.0}, "lower") is None  # no shared seed


def _fd(ref: dict, pixels: float, ssl: float, classifier: float) -> dict:
    factors = {"pixels": pixels, "ssl": ssl, "classifier": classifier}
    return {v: compare(ref, {s: x * f * (1 + 0.01 * s) for s, x in ref.items()}, "lower")
            for v, f in factors.items()}


def test_a_recipe_is_better_only_when_every_view_agrees():
    ref = {0: 0.3, 1: 0.32, 2: 0.28}
    assert generation_verdict(_fd(ref, 0.7, 0.8, 0.6)) == BETTER
    assert generation_verdict(_fd(ref, 1.3, 1.2, 1.4)) == WORSE
    disagree = _fd(ref, 1.3, 1.1, 0.8)  # the demo's old situation: one view says better
    assert generation_verdict(disagree) == WORSE  # worse in any view is worse
    assert generation_verdict(_fd(ref, 1.0, 0.7, 0.7)) == DISAGREE
    same = {v: compare(ref, {0: 0.2, 1: 0.4, 2: 0.3}, "lower") for v in ("pixels", "ssl")}
    assert generation_verdict(same) == SAME
    line = verdict_line("coupled", "baseline", WORSE, disagree)
    assert line.startswith("coupled vs baseline: generation worse (FD∞ pixels 1.31x [")
    assert line.endswith(": views disagree)") and "classifier 0.81x" in line
