"""Scoring one study run (a tokenizer and the generator trained on its latent), and the
direction of every metric.

The tokenizer is scored by `evaluation.tokenizer.evaluate_tokenizer_run` (reconstruction,
reconstruction Fréchet distance, Lipschitz complexity, nearest-neighbour accuracy,
predictability, codebook usage, cosine histogram, eigenvalues); the generator by
`evaluation.generator.evaluate_generator_run`, which draws the samples, keeps them as the public
`samples.npz` in the generator run, and scores them in every view (`evaluation.views`: raw and
bias-corrected Fréchet distance with floors, KID, precision, recall, density, coverage), with
the class accuracy, the held-out training loss and, for a text-conditioned generator on data
with structured attributes, prompt adherence (`adherence/...`, `evaluation.prompts`).

The evaluation dicts hold figures (numbers) and series (lists: eigenvalues, histograms).
`run_metrics` turns the figures into flat `group/name` (or `group/name/view`) metrics that a
study averages over seeds; the series stay in the run's `evaluation.json` for the report's
plots.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from latentlab.io import write_json

VERIFY = "scaling.json"

# whether a smaller or a larger value is better, by the metric's name (matched as the whole
# name or its prefix before "_", after dropping "heldout_"; a view after "/" is ignored)
DIRECTIONS: dict[str, str] = {
    "mse": "lower", "psnr": "higher", "ssim": "higher", "rfd": "lower",
    "lipschitz": "lower", "nn_accuracy": "higher", "predictability": "lower",
    "usage": "higher", "perplexity": "higher", "dead_codes": "lower",
    "fd": "lower", "kid": "lower", "precision": "higher", "recall": "higher",
    "class_accuracy": "higher", "loss": "lower", "nll": "lower", "bits": "lower",
    "coverage": "higher",
}
# the uncertainty of KID and the real-vs-real floors (the same for every recipe): not scores;
# density is about 1 when the distributions match, above 1 where samples crowd into dense
# regions (Naeem et al. 2020), so neither way is better
NO_DIRECTION = ("kid_std", "fd_floor", "fd_inf_floor", "density")
# numbers that describe an evaluation rather than the run: seed, set sizes, the judge's own
# held-out accuracy (the same feature network scores every run; the summary keeps it apart)
NOT_METRICS = ("seed", "samples", "real", "feature_net_accuracy", "ssl_retrieval",
               "ssl_knn_accuracy")
# the order of the groups, as in the pipeline; "prior" is a VAE's own sampler (kl tokenizers)
GROUPS = ("tokenizer", "generation", "prior", "scaling")
# prompt adherence (`evaluation.prompts`): accuracies and the all-correct rate are better
# higher; a rate's Wilson bounds, the counts and the attribute judge's own accuracy are not
# scores (the judge's goes to the summary's judges, as the feature networks' do)
ADHERENCE = "adherence/"
ADHERENCE_JUDGE = "adherence/judge/"


def direction(metric: str) -> str | None:
    """'lower' or 'higher' (is better) for a metric name such as 'generation/fd_inf/pixels';
    None when the name says nothing about it."""
    parts = metric.split("/")
    if len(parts) > 2 and parts[1] == "adherence":  # generation/adherence[/heldout]/NAME[/..]
        name = [p for p in parts[2:] if p != "heldout"]
        return "higher" if name[0] == "accuracy" or name == ["all_correct"] else None
    name = (parts[1] if len(parts) > 1 else parts[0]).removeprefix("heldout_")
    if parts[0] == "scaling":  # a prediction's check: only its error has a better way
        return "lower" if name == "abs_error" else None
    if name in NO_DIRECTION:
        return None
    for known in sorted(DIRECTIONS, key=len, reverse=True):
        if name == known or name.startswith(known + "_"):
            return DIRECTIONS[known]
    return None


def run_metrics(evaluation: dict[str, dict]) -> dict[str, float]:
    """The finite numbers of each group of a run's evaluation, as {'group/name': value}."""
    out: dict[str, float] = {}
    for group in GROUPS:
        for key, value in sorted(evaluation.get(group, {}).items()):
            if (isinstance(value, (int, float)) and not isinstance(value, bool)
                    and key not in NOT_METRICS and not key.startswith(ADHERENCE_JUDGE)
                    and math.isfinite(value)):
                out[f"{group}/{key}"] = float(value)
    return out


def pooled_adherence(metrics: dict[str, dict], recipes: list[str]) -> dict[str, dict]:
    """Per recipe, the all-correct rate of prompt adherence over the samples of every seed
    together, with its 95 % Wilson interval: {recipe: {"all_correct": {"rate", "low", "high",
    "n"}, "heldout/all_correct": ...}} for the rates the study's runs report."""
    from latentlab.evaluation.adherence import wilson_interval

    out: dict[str, dict] = {}
    for part in ("", "heldout/"):
        rates = metrics.get(f"generation/{ADHERENCE}{part}all_correct") or {}
        counts = metrics.get(f"generation/{ADHERENCE}{part}n") or {}
        for recipe in recipes:
            rate, n = rates.get(recipe), counts.get(recipe)
            if not (rate and n):
                continue
            sizes = dict(zip(n["seeds"], n["values"], strict=True))
            right = sum(round(v * sizes[s]) for s, v in zip(rate["seeds"], rate["values"],
                                                            strict=True))
            total = int(sum(sizes[s] for s in rate["seeds"]))
            low, high = wilson_interval(right, total)
            out.setdefault(recipe, {})[f"{part}all_correct"] = {
                "rate": right / total, "low": low, "high": high, "n": total}
    return out


def evaluate_run(tokenizer_run: Path, generator_run: Path, n: int, seed: int,
                 cache_dir: str | None, probe_steps: int) -> dict[str, dict]:
    """Score one run: {'tokenizer': {...}, 'generation': {...}} (see the module docstring),
    and for a VAE (kl) tokenizer 'prior': n decoded N(0, I) draws scored as the generator's
    samples are, what the latent generator is measured against.

    Leaves `generator_run/samples.npz` (and `tokenizer_run/prior_samples.npz`): n samples in
    the public format.
    """
    from latentlab.evaluation.generator import evaluate_generator_run, evaluate_vae_prior
    from latentlab.evaluation.tokenizer import evaluate_tokenizer_run
    from latentlab.tokenizers.tokenizer import Tokenizer

    out = {"tokenizer": evaluate_tokenizer_run(tokenizer_run, cache_dir=cache_dir,
                                               probe_steps=probe_steps, seed=seed),
           "generation": evaluate_generator_run(generator_run, n=n, cache_dir=cache_dir,
                                                seed=seed)}
    if Tokenizer.load(tokenizer_run).cfg.bottleneck.kind == "kl":
        out["prior"] = evaluate_vae_prior(tokenizer_run, n, cache_dir, seed)
    return out


def verify_run(root: Path) -> dict | None:
    """The coupled recipe's predicted big-generator loss against the actual one for the run in
    `root` (`evaluation.scaling`), kept in ROOT/scaling.json until its generator changes."""
    from latentlab.evaluation.scaling import verify_prediction

    generator = root / "generator"
    if not (generator / "metrics.json").exists():
        return None
    path = root / VERIFY
    made = (generator / "metrics.json").stat().st_mtime_ns
    if path.exists():
        stored = json.loads(path.read_text())
        if stored.get("generator_mtime_ns") == made:
            return stored["verification"]
    found = verify_prediction(root / "tokenizer", generator)
    write_json(path, {"generator_mtime_ns": made, "verification": found})
    return found


def stage_flops(roots: list[Path]) -> dict[str, float]:
    """Mean training FLOPs and steps of each trained stage over the runs in `roots`."""
    found: dict[str, float] = {}
    for stage in ("tokenizer", "generator"):
        stored = [json.loads((r / stage / "metrics.json").read_text()) for r in roots
                  if (r / stage / "metrics.json").exists()]
        stored = [m for m in stored if "train_flops" in m]
        if stored:
            found[f"{stage}_flops"] = statistics.fmean(m["train_flops"] for m in stored)
            found[f"{stage}_steps"] = statistics.fmean(m["steps"] for m in stored)
    return found
