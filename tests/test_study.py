"""Studies: a tiny study of two recipes on digits end to end, its summary and report, reuse of
finished runs, the statistics over seeds, and the errors that must come before any training."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from latentlab import config as C
from latentlab.cli import main
from latentlab.errors import ConfigError
from latentlab.generation.config import GeneratorRunConfig
from latentlab.study.config import load_study, study_from_dict, tokenizer_run
from latentlab.study.evaluate import direction
from latentlab.study.presets import study_preset
from latentlab.study.run import Clock, headline, plan, run_study, summarize

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "study"
GENERATOR_CONFIGS = CONFIGS.parent / "generators"

# two recipes, one seed, budgets of a few dozen steps: the whole pipeline in seconds
TINY = {
    "recipes": ["baseline", "coupled"],
    "seeds": [0],
    "tokenizer": {"model": {"arch": {"channels": 8}},
                  "coupled": {"widths": [8, 16, 32], "depth": 1, "fit_every": 10, "start": 0,
                              "ramp": 10},
                  "train": {"batch_size": 32, "warmup": 5, "log_every": 10, "eval_every": 0,
                            "checkpoint_every": 1000}},
    "generator": {"generator": {"network": {"kind": "dit", "width": 32, "depth": 1, "heads": 2},
                                "steps": 8},
                  "train": {"batch_size": 64, "warmup": 5, "log_every": 10, "eval_every": 0,
                            "checkpoint_every": 1000}},
    "budget": {"tokenizer_steps": 40, "generator_steps": 40, "samples": 60},
    "curves": {"generator_steps": [20]},
}
EXPECTED = [f"tokenizer/{m}" for m in ("mse", "psnr", "ssim", "rfd", "lipschitz_encoder_mean",
                                       "lipschitz_decoder_mean", "nn_accuracy",
                                       "predictability")] + [
    f"generation/{m}/{v}" for m in ("fd", "fd_inf", "kid", "precision", "recall", "density",
                                    "coverage") for v in ("pixels", "classifier", "ssl")] + [
    "generation/class_accuracy", "generation/heldout_loss"] + [
    f"prior/{m}/{v}" for m in ("fd", "fd_inf") for v in ("pixels", "classifier", "ssl")]


@functools.cache
def _tiny_study(base: Path) -> tuple[Path, dict]:
    """Run the tiny study once per test session (the browser test renders its report); the
    feature network cache is the one the metric tests share."""
    cfg = study_from_dict(TINY | {"evaluation": {"cache_dir": str(base / "feature-cache"),
                                                 "probe_steps": 20}})
    out = base / "tiny-study"
    return out, run_study(cfg, out)


@pytest.fixture
def tiny_study(tmp_path_factory) -> tuple[Path, dict]:
    return _tiny_study(tmp_path_factory.getbasetemp())


@pytest.mark.slow
def test_summary_has_every_metric_for_every_recipe(tiny_study):
    out, summary = tiny_study
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["recipes"] == ["baseline", "coupled"] and summary["seeds"] == [0]
    assert summary["budgets"]["tokenizer_steps"] == 40
    assert summary["budgets"]["samples"] == 60
    metrics = summary["metrics"]
    assert set(EXPECTED) <= set(metrics)
    # the coupled recipe's prediction of its big generator's loss, checked against it
    scaling = [name for name in metrics if name.startswith("scaling/")]
    assert {"scaling/abs_error", "scaling/predicted_t0", "scaling/actual_t3"} <= set(scaling)
    for name in scaling:
        assert metrics[name]["baseline"] is None  # no tiny generators, no prediction
        value = metrics[name]["coupled"]["mean"]
        if "rho" in name:
            assert 0 < value <= 1, name
        elif "error" not in name:
            assert value > 0, name
    for name, per_recipe in metrics.items():
        for recipe in summary["recipes"]:
            figure = per_recipe[recipe]
            if name in scaling and recipe == "baseline":
                continue
            assert figure is not None, (name, recipe)
            assert len(figure["values"]) == 1 and figure["std"] == 0.0
            assert math.isfinite(figure["mean"]) and figure["mean"] == figure["values"][0]
    for name in EXPECTED:
        expected = (None,) if "/density/" in name else ("lower", "higher")  # ~1 is a match
        assert summary["directions"][name] in expected, name
    for recipe in summary["recipes"]:
        assert 0 <= metrics["generation/precision/ssl"][recipe]["mean"] <= 1
        assert 0 <= metrics["generation/class_accuracy"][recipe]["mean"] <= 1
        # the study's reconstruction figure is the run's own held-out figure
        run = out / summary["runs"][recipe][0]["tokenizer"]
        own = json.loads((run / "metrics.json").read_text())["test"]["mse"]
        assert metrics["tokenizer/mse"][recipe]["mean"] == pytest.approx(own, rel=1e-4)


@pytest.mark.slow
def test_every_recipe_gets_the_same_budget_and_generator(tiny_study):
    out, summary = tiny_study
    generators, steps, flops = [], [], []
    for recipe in summary["recipes"]:
        entry = summary["runs"][recipe][0]
        tok = json.loads((out / entry["tokenizer"] / "metrics.json").read_text())
        assert tok["recipe"] == recipe
        steps.append(tok["steps"])
        flops.append(tok["train_flops"])
        assert summary["seconds"][recipe]["tokenizer_flops"] == tok["train_flops"]
        gen_run = out / entry["generator"]
        assert json.loads((gen_run / "metrics.json").read_text())["steps"] == 40
        cfg = C.load(GeneratorRunConfig, gen_run / "config.yaml")
        assert Path(cfg.tokenizer) == (out / entry["tokenizer"]).resolve()
        generators.append(C.to_dict(cfg) | {"tokenizer": ""})
        with np.load(out / entry["samples"]) as f:  # the public samples format
            assert f["images"].dtype == np.uint8 and f["images"].shape == (60, 8, 8, 1)
            assert f["labels"].dtype == np.int64
            np.testing.assert_array_equal(f["labels"], np.arange(60) % 10)
    assert generators[0] == generators[1]
    # equal FLOPs: the dearest recipe trains for the budget's steps, the others for more, and
    # every tokenizer for the same FLOPs (to the rounding of a step)
    assert min(steps) == 40
    assert max(flops) / min(flops) < 1 + 1.5 / 40
    coupled = json.loads((out / summary["runs"]["coupled"][0]["tokenizer"] /
                          "metrics.json").read_text())
    # the coupled recipe extrapolates to the study's generator (on this latent)
    assert coupled["big_parameters"] == json.loads(
        (out / summary["runs"]["coupled"][0]["generator"] / "metrics.json").read_text()
    )["parameters"]


@pytest.mark.slow
def test_curves_hold_every_point_for_every_recipe(tiny_study):
    out, summary = tiny_study
    curves = summary["curves"]
    assert set(curves) == {"steps40", "steps20"}
    assert curves["steps40"]["main"] and not curves["steps20"]["main"]
    assert (curves["steps20"]["steps"], curves["steps20"]["width"]) == (20, 32)
    for point in curves.values():
        for view in ("pixels", "classifier", "ssl"):
            assert set(point["fd_inf"][view]) == {"baseline", "coupled"}
        assert point["verdicts"]["coupled"] == "one seed: no interval"
    # the main point is the main generator's own figure; the extra one a generator of its own
    main = json.loads((out / summary["runs"]["coupled"][0]["evaluation"]).read_text())
    assert curves["steps40"]["fd_inf"]["ssl"]["coupled"]["values"] == [
        main["evaluation"]["generation"]["fd_inf/ssl"]]
    extra = out / "runs" / "coupled" / "seed0" / "curve" / "steps20"
    assert json.loads((extra / "metrics.json").read_text())["steps"] == 20
    page = (out / "report.html").read_text()
    assert "FD∞ against generator steps" in page


@pytest.mark.slow
def test_a_rerun_reuses_finished_runs(tiny_study, capsys):
    out, summary = tiny_study
    files = sorted(out.glob("runs/*/seed0/**/metrics.json")) + sorted(
        out.glob("runs/*/seed0/**/evaluation.json"))
    assert len(files) == 10  # 2 recipes x (tokenizer, generator, curve point, 2 evaluations)
    before = {f: f.stat().st_mtime_ns for f in files}
    cfg = load_study(out / "study.yaml")
    again = run_study(cfg, out)
    assert {f: f.stat().st_mtime_ns for f in files} == before
    assert ": tokenizer (" not in capsys.readouterr().err
    assert again["metrics"] == summary["metrics"]


@pytest.mark.slow
def test_a_changed_stage_is_trained_again_with_what_follows(tiny_study, tmp_path, capsys):
    out, _ = tiny_study
    copy = tmp_path / "study"
    shutil.copytree(out, copy)
    tok = copy / "runs" / "baseline" / "seed0" / "tokenizer" / "metrics.json"
    before = tok.stat().st_mtime_ns
    # the baseline alone, so one generator trains again; with equal FLOPs its tokenizer steps
    # depend on the recipes compared, so they are given as the first run found them
    steps = json.loads(tok.read_text())["steps"]
    cfg = load_study(copy / "study.yaml", {"budget.generator_steps": 20, "recipes": ["baseline"],
                                           "budget.equal_flops": False,
                                           "budget.tokenizer_steps": steps})
    summary = run_study(cfg, copy)
    assert tok.stat().st_mtime_ns == before  # the tokenizer's config did not change
    err = capsys.readouterr().err
    assert "baseline seed 0: tokenizer (" not in err
    assert "baseline seed 0: generator (" in err and "baseline seed 0: evaluate (" in err
    gen = json.loads((copy / summary["runs"]["baseline"][0]["generator"] /
                      "metrics.json").read_text())
    assert gen["steps"] == 20 and summary["budgets"]["generator_steps"] == 20


@pytest.mark.slow
def test_the_report_is_one_self_contained_file(tiny_study):
    out, summary = tiny_study
    page = (out / "report.html").read_text()
    assert not re.search(r"https?://|<script|<link|@import", page)
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) >= 8  # 2 x (reconstructions, samples), curves, fits, latent plots
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    ranked = [name for name, per in summary["metrics"].items() if summary["directions"][name]
              and len({f["mean"] for f in per.values() if f}) > 1]  # ties mark nothing
    assert page.count('class="best"') == len(ranked)
    # the verdict table opens the report, one row per recipe against the reference
    assert page.index("<h2>Verdicts</h2>") < page.index("<h2>Metrics</h2>")
    assert "<td>coupled vs baseline</td>" in page and "one seed: no interval" in page
    assert page.count("FD∞ of the VAE's prior") == len(summary["views"])  # a kl tokenizer
    assert "<td>coupled</td><td>t0</td><td>30</td><td>yes</td>" in page  # its last fits


def _synthetic_summary(tmp_path, fd_inf: dict[str, dict[str, list[float]]]) -> dict:
    """A summary of three seeds from given FD-infinity values per view and recipe."""
    cfg = study_from_dict({"recipes": ["baseline", "coupled"], "seeds": [0, 1, 2]})
    runs = plan(cfg, tmp_path)
    evaluations = [{"tokenizer": {"mse": 0.5, "seed": r.seed} | ({"usage": 0.9}
                                                                 if r.recipe == "coupled" else {}),
                    "generation": {f"fd_inf/{v}": values[r.recipe][r.seed]
                                   for v, values in fd_inf.items()} | {"samples": 60}}
                   for r in runs]
    return summarize(cfg, runs, evaluations, tmp_path)


def test_summary_statistics_over_seeds(tmp_path):
    fd = {"baseline": [10.0, 12.0, 14.0], "coupled": [7.0, 8.0, 9.0]}
    summary = _synthetic_summary(tmp_path, {"pixels": fd})
    assert summary["metrics"]["generation/fd_inf/pixels"]["baseline"] == {
        "mean": 12.0, "std": 2.0, "values": [10.0, 12.0, 14.0], "seeds": [0, 1, 2]}
    assert summary["metrics"]["generation/fd_inf/pixels"]["coupled"]["std"] == 1.0
    assert summary["metrics"]["tokenizer/usage"]["baseline"] is None
    assert set(summary["metrics"]) == {"tokenizer/mse", "tokenizer/usage",
                                       "generation/fd_inf/pixels"}
    assert list(summary["metrics"])[0].startswith("tokenizer/")
    found = summary["comparisons"]["generation/fd_inf/pixels"]["coupled"]
    ratios = [7 / 10, 8 / 12, 9 / 14]
    assert found["kind"] == "ratio" and found["n"] == 3
    assert found["estimate"] == pytest.approx(math.prod(ratios) ** (1 / 3))
    assert found["low"] < min(ratios) and found["high"] > max(ratios)
    assert headline(summary) == [summary["verdicts"]["coupled"]["line"]]


def test_a_synthetic_study_whose_views_disagree_or_agree(tmp_path):
    base = [0.30, 0.33, 0.27]
    scaled = lambda f: [b * f * (1 + 0.01 * i) for i, b in enumerate(base)]  # noqa: E731
    disagree = {"pixels": {"baseline": base, "coupled": scaled(1.3)},
                "ssl": {"baseline": base, "coupled": scaled(0.95)},
                "classifier": {"baseline": base, "coupled": scaled(0.75)}}
    summary = _synthetic_summary(tmp_path / "a", disagree)
    verdict = summary["verdicts"]["coupled"]
    assert verdict["views"] == ["pixels", "classifier", "ssl"]
    assert verdict["generation"] == "worse" and verdict["line"].endswith(": views disagree)")
    only_better = {v: {"baseline": base, "coupled": scaled(f)}
                   for v, f in (("pixels", 1.0), ("ssl", 0.7), ("classifier", 0.7))}
    assert _synthetic_summary(tmp_path / "b", only_better)["verdicts"]["coupled"][
        "generation"] == "views disagree"
    agree = {v: {"baseline": base, "coupled": scaled(0.7)} for v in disagree}
    assert _synthetic_summary(tmp_path / "c", agree)["verdicts"]["coupled"]["generation"] == (
        "better")
    worse = {v: {"baseline": base, "coupled": scaled(1.4)} for v in disagree}
    line = _synthetic_summary(tmp_path / "d", worse)["verdicts"]["coupled"]["line"]
    assert line.startswith("coupled vs baseline: generation worse (FD∞ pixels 1.41x [")


@pytest.mark.parametrize("name, way", [
    ("generation/fd", "lower"), ("generation/kid", "lower"), ("generation/kid_std", None),
    ("generation/fd_inf/ssl", "lower"), ("generation/fd_inf_floor/ssl", None),
    ("generation/fd_floor/pixels", None), ("generation/coverage/classifier", "higher"),
    ("generation/density/pixels", None),
    ("generation/precision", "higher"), ("generation/heldout_loss", "lower"),
    ("tokenizer/psnr", "higher"), ("tokenizer/lipschitz_encoder_q95", "lower"),
    ("tokenizer/nn_accuracy", "higher"), ("tokenizer/usage", "higher"),
    ("tokenizer/something_else", None)])
def test_metric_directions(name, way):
    assert direction(name) == way


def test_eta_comes_from_the_stages_that_ran():
    clock = Clock([(r, s) for r in ("a", "b") for s in ("tokenizer", "generator")])
    clock.done("a", "tokenizer", 10.0)
    assert clock.eta() is None  # no generator has run yet
    clock.done("a", "generator", 20.0)
    assert clock.eta() == 30.0  # b's stages guessed from a's
    clock.done("b", "tokenizer", 40.0)
    assert clock.eta() == 20.0
    clock.done("b", "generator", None)  # reused: no time
    assert clock.eta() == 0.0


def test_the_preset_files_match_the_registry():
    for name in ("digits", "demo"):
        assert load_study(CONFIGS / f"{name}.yaml") == study_preset(name), name
    demo = study_preset("demo")
    assert demo.recipes == ["baseline", "coupled"] and len(demo.seeds) == 3
    assert study_preset("digits").tokenizer == demo.tokenizer  # budgets, recipes, seeds differ


def test_the_coupled_studies_resolve_every_variant():
    """configs/study/coupled-*.yaml: each variant's tokenizer is a valid config that differs
    from the shared one only where it says."""
    cfg = load_study(CONFIGS / "coupled-ablation.yaml")
    shared = tokenizer_run(cfg, "coupled", 0, Path("g.yaml"))
    assert shared.coupled.standardize == "element" and shared.coupled.distortion == "onestep"
    dit = tokenizer_run(cfg, "c-dit", 0, Path("g.yaml"))
    assert dit.recipe == "coupled" and dit.coupled.tiny == "dit"
    assert dit.coupled.standardize == "channel" and dit.coupled.widths == (32, 64, 96)
    identity = tokenizer_run(cfg, "c-identity", 0, Path("g.yaml"), steps=7)
    assert identity.model.bottleneck.kind == "identity" and identity.train.steps == 7
    assert C.first_difference(dataclasses.replace(identity, model=shared.model, coupled=
                                                  shared.coupled, train=shared.train),
                              shared) is None
    confirm = load_study(CONFIGS / "coupled-confirm.yaml")
    assert confirm.curves.generator_steps == [300, 800] and confirm.seeds == [3, 4, 5]


def test_a_bad_variant_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="variants.x.tokenizer.coupled.distortion"):
        load_study(None, {"recipes": ["baseline", "x"], "variants": [
            {"name": "x", "tokenizer": {"coupled": {"distortion": "blur"}}}]})
    with pytest.raises(ConfigError, match="recipes: unknown recipe 'y'"):
        load_study(None, {"recipes": ["baseline", "y"]})


def test_overrides_and_the_tokenizer_preset():
    cfg = load_study(None, {"budget.samples": 7, "tokenizer_preset": "digits-vq",
                            "tokenizer.train.lr": 0.01})
    assert cfg.budget.samples == 7
    assert cfg.tokenizer.model.bottleneck.kind == "vq" and cfg.tokenizer.train.lr == 0.01


@pytest.mark.parametrize("field, value, message", [
    ("recipes", "[baseline, magic]", "unknown recipe 'magic'"),
    ("data", "{spec: digts}", "digts"),
    ("tokenizer_preset", "digits-xyz", "unknown preset 'digits-xyz'"),
    ("tokenizer", "{train: {stepz: 3}}", "unknown field 'tokenizer.train.stepz'"),
])
def test_bad_configs_fail_before_any_training(tmp_path, capsys, field, value, message):
    config = tmp_path / "study.yaml"
    config.write_text(f"{field}: {value}\n")
    out = tmp_path / "out"
    assert main(["study", "--config", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and str(config) in err
    assert not out.exists()


def test_a_bad_config_value_raises_config_error():
    with pytest.raises(ConfigError, match="seeds"):
        study_from_dict({"seeds": [0, 0]})


def test_a_study_of_a_network_without_a_transformer_width_varies_only_the_budget():
    from latentlab.errors import ConfigError
    from latentlab.generators.pixelcnn import PixelCNNConfig
    from latentlab.study.curves import CurveConfig, CurvePoint, curve_points, transformer_width

    base = C.load(GeneratorRunConfig, GENERATOR_CONFIGS / "digits-pixelcnn.yaml")
    ar = C.load(GeneratorRunConfig, GENERATOR_CONFIGS / "digits-ar.yaml")
    assert transformer_width(base) == 0 and transformer_width(ar) == 128
    [point] = curve_points(CurveConfig(generator_steps=[20]), 40, 0)
    run = point.generator(base)
    assert run.train.steps == 20 and run.generator.network == base.generator.network
    assert isinstance(run.generator.network, PixelCNNConfig)
    with pytest.raises(ConfigError, match="curves.generator_widths: the study's generator"):
        curve_points(CurveConfig(generator_widths=[64]), 40, 0)
    assert CurvePoint("w", 40, 64).generator(ar).generator.network.width == 64
