"""Studies of text-conditioned generators: prompt adherence flows into summary.json (per-seed
figures, the all-correct rate pooled over seeds, paired comparisons) and report.html (the
adherence table, a grid of samples captioned with their prompts, escaped)."""

from __future__ import annotations

import functools
import html
import re
from pathlib import Path

import numpy as np
import pytest

from latentlab.evaluation import attributes, features, ssl
from latentlab.evaluation.adherence import wilson_interval
from latentlab.study.config import load_study, study_from_dict
from latentlab.study.evaluate import direction, pooled_adherence, run_metrics
from latentlab.study.report import write_report
from latentlab.study.run import compare_recipes, run_study

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "study"
SPEC = "shapes:size=8,n=256,holdout=green-triangle/red-circle/blue-square"
# two recipes, two seeds (paired intervals), a few steps of each stage; the judges (feature
# network, contrastive encoder, attribute judge) train for a few steps (JUDGES), not minutes
TINY = {
    "data": {"spec": SPEC},
    "recipes": ["baseline", "dae"],
    "seeds": [0, 1],
    "tokenizer_preset": "shapes32-kl",
    "tokenizer": {"model": {"arch": {"channels": 8, "ch_mult": [1, 2]}},
                  "train": {"batch_size": 32, "warmup": 5, "log_every": 10, "eval_every": 0,
                            "checkpoint_every": 1000}},
    "generator": {"generator": {"condition": "text",
                                "text": {"width": 16, "depth": 1, "heads": 2},
                                "network": {"kind": "dit", "patch_size": 1, "width": 16,
                                            "depth": 1, "heads": 2},
                                "steps": 4},
                  "train": {"batch_size": 32, "warmup": 5, "log_every": 10, "eval_every": 0,
                            "checkpoint_every": 1000}},
    "budget": {"tokenizer_steps": 10, "generator_steps": 10, "samples": 64,
               "equal_flops": False},
}
JUDGES = ((features, "FeatureNetConfig"), (ssl, "SSLConfig"),
          (attributes, "AttributeJudgeConfig"))


@functools.cache
def _text_study(base: Path) -> tuple[Path, dict]:
    """Run the tiny text study once per test session, its judges trained for 30 steps (in a
    cache of their own)."""
    cfg = study_from_dict(TINY | {"evaluation": {"cache_dir": str(base / "text-study-cache"),
                                                 "probe_steps": 5}})
    out = base / "text-study"
    with pytest.MonkeyPatch.context() as patch:
        for module, name in JUDGES:
            patch.setattr(module, name, functools.partial(getattr(module, name), epochs=0,
                                                          min_steps=30, max_steps=30))
        return out, run_study(cfg, out)


@pytest.fixture
def text_study(tmp_path_factory) -> tuple[Path, dict]:
    return _text_study(tmp_path_factory.getbasetemp())


@pytest.mark.slow
def test_a_text_study_summarises_prompt_adherence(text_study):
    out, summary = text_study
    metrics = summary["metrics"]
    for name in ("accuracy/shape", "accuracy/colour", "accuracy/position", "all_correct",
                 "all_correct/low", "all_correct/high", "n", "heldout/all_correct",
                 "heldout/n", "unscored"):
        per_recipe = metrics[f"generation/adherence/{name}"]
        for recipe in summary["recipes"]:
            assert per_recipe[recipe]["seeds"] == [0, 1], name
    for recipe in summary["recipes"]:
        assert metrics["generation/adherence/n"][recipe]["values"] == [64.0, 64.0]
        assert metrics["generation/adherence/unscored"][recipe]["mean"] == 0
        heldout = metrics["generation/adherence/heldout/n"][recipe]["mean"]
        assert 0 < heldout < 64  # the test captions that name a held-out pair
        for name, figure in metrics.items():
            if "/adherence/" in name and "/n" not in name and "unscored" not in name:
                assert all(0 <= v <= 1 for v in figure[recipe]["values"]), name
        # pooled over both seeds' 128 samples
        pooled = summary["adherence"][recipe]["all_correct"]
        rates = metrics["generation/adherence/all_correct"][recipe]["values"]
        assert pooled["n"] == 128
        assert pooled["rate"] == pytest.approx(sum(rates) / 2)
        assert (pooled["low"], pooled["high"]) == pytest.approx(
            wilson_interval(round(pooled["rate"] * 128), 128))
        assert summary["adherence"][recipe]["heldout/all_correct"]["n"] == 2 * heldout
    # the judge's own accuracy is kept apart from the runs' metrics
    assert not any("/judge/" in name for name in metrics)
    assert {"attribute_judge/shape", "attribute_judge/colour"} <= set(summary["judges"])
    # two seeds: the all-correct rate is compared with the reference, with an interval
    found = summary["comparisons"]["generation/adherence/all_correct"]["dae"]
    assert found["n"] == 2 and found["low"] <= found["estimate"] <= found["high"]
    assert summary["directions"]["generation/adherence/all_correct"] == "higher"
    assert summary["directions"]["generation/adherence/all_correct/low"] is None


@pytest.mark.slow
def test_a_text_study_report_shows_prompts_and_their_samples(text_study):
    out, summary = text_study
    page = (out / "report.html").read_text()
    section = page[page.index("<h2>Prompt adherence</h2>"):page.index("<h2>Reconstructions")]
    for recipe in summary["recipes"]:
        with np.load(out / summary["runs"][recipe][0]["samples"]) as f:
            prompts = f["prompts"].astype(str)[:12]
        for prompt in prompts:
            assert f"<figcaption>{html.escape(prompt)}</figcaption>" in section
        assert f"<h3>{recipe}: samples and their prompts (seed 0)</h3>" in section
    assert section.count("<img src=\"data:image/png;base64,") == 12 * len(summary["recipes"])
    row = re.search(r"<tr><td>dae</td>(.*?)</tr>", section).group(1)
    pooled = summary["adherence"]["dae"]["all_correct"]
    assert f"{pooled['rate']:.3f} [{pooled['low']:.3f}, {pooled['high']:.3f}] (n 128)" in row


def _prompted_study(tmp_path: Path, prompts: list[str]) -> dict:
    """A two-recipe, two-seed summary with adherence figures, and samples.npz with prompts."""
    per_run = {("base", 0): 0.5, ("base", 1): 0.25, ("new", 0): 0.75, ("new", 1): 0.5}
    metrics = {}
    for key, value in (("all_correct", None), ("n", 4.0), ("accuracy/colour", 0.9)):
        name = f"generation/adherence/{key}"
        metrics[name] = {r: {"mean": 0.0, "std": 0.0, "seeds": [0, 1],
                             "values": [value or per_run[(r, s)] for s in (0, 1)]}
                         for r in ("base", "new")}
    runs = {}
    for recipe in ("base", "new"):
        samples = tmp_path / recipe / "samples.npz"
        samples.parent.mkdir()
        (samples.parent / "metrics.jsonl").write_text("")  # no training logs
        images = np.full((len(prompts), 4, 4, 3), 200, dtype=np.uint8)
        np.savez(samples, images=images, labels=np.zeros(len(prompts), dtype=np.int64),
                 prompts=np.array(prompts))
        runs[recipe] = [{"seed": 0, "samples": f"{recipe}/samples.npz", "tokenizer": recipe,
                         "generator": recipe, "evaluation": f"{recipe}/evaluation.json"}]
    comparisons, _ = compare_recipes(metrics, ["base", "new"])
    return {"dataset": "shapes", "recipes": ["base", "new"], "reference": "base",
            "seeds": [0, 1], "budgets": {"tokenizer_steps": 1, "tokenizer_batch_size": 1,
                                         "generator_family": "flow", "generator_steps": 1,
                                         "generator_batch_size": 1, "samples": 4},
            "metrics": metrics, "directions": {n: direction(n) for n in metrics},
            "comparisons": comparisons, "verdicts": {}, "seconds": {}, "runs": runs,
            "adherence": pooled_adherence(metrics, ["base", "new"])}


def test_adherence_pools_seeds_and_the_report_escapes_prompts(tmp_path):
    prompts = ["a red circle at the top", "<b>bold</b> & a blue square"]
    summary = _prompted_study(tmp_path, prompts)
    # 2 + 1 of the base recipe's 8 samples are all correct, 3 + 2 of the new one's
    assert summary["adherence"]["base"]["all_correct"] == pytest.approx(
        {"rate": 3 / 8, "low": wilson_interval(3, 8)[0], "high": wilson_interval(3, 8)[1],
         "n": 8})
    assert summary["adherence"]["new"]["all_correct"]["rate"] == 5 / 8
    assert "heldout/all_correct" not in summary["adherence"]["new"]
    page = write_report(summary, tmp_path).read_text()
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; a blue square</figcaption>" in page
    assert "<b>bold</b>" not in page
    assert page.count("<figcaption>a red circle at the top</figcaption>") == 2
    assert "0.375 [" in page and "(n 8)" in page


def test_a_study_without_prompts_says_so(tmp_path):
    summary = _prompted_study(tmp_path, ["a red circle at the top"])
    summary |= {"metrics": {}, "adherence": {}, "comparisons": {}, "directions": {}}
    for recipe in ("base", "new"):
        (tmp_path / recipe / "samples.npz").unlink()
    page = write_report(summary, tmp_path).read_text()
    assert "no prompt adherence: no text-conditioned generator" in page
    assert "no samples with prompts" in page and "<figcaption>" not in page


@pytest.mark.parametrize("name, way", [
    ("generation/adherence/accuracy/colour", "higher"),
    ("generation/adherence/heldout/accuracy/relation", "higher"),
    ("generation/adherence/all_correct", "higher"),
    ("generation/adherence/heldout/all_correct", "higher"),
    ("generation/adherence/all_correct/high", None),
    ("generation/adherence/n", None),
    ("generation/adherence/unscored", None),
])
def test_adherence_directions(name, way):
    assert direction(name) == way


def test_the_judges_accuracy_is_no_run_metric():
    found = run_metrics({"generation": {"adherence/all_correct": 0.5, "adherence/n": 8,
                                        "adherence/judge/colour": 0.99,
                                        "adherence/heldout/all_correct": float("nan")}})
    assert found == {"generation/adherence/all_correct": 0.5, "generation/adherence/n": 8.0}


def test_the_shapes_text_preset_loads():
    cfg = load_study(CONFIGS / "shapes-text.yaml")
    assert cfg.recipes == ["baseline", "dae", "coupled", "coupled+dae"] and cfg.seeds == [0, 1]
    assert cfg.data.spec == "shapes:size=32" and cfg.tokenizer_preset == "shapes32-kl"
    g = cfg.generator.generator
    assert (g.family, g.condition, g.network.kind) == ("flow", "text", "dit")
    assert (g.network.patch_size, g.network.width, g.network.depth, g.network.heads) == (
        2, 128, 4, 4)
    assert (cfg.budget.tokenizer_steps, cfg.budget.generator_steps, cfg.budget.samples) == (
        1000, 2000, 1000)
