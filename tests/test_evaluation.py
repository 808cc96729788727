"""`latentlab evaluate` on tiny trained runs, and the predictability probe on latents whose
answer is known."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from latentlab.cli import main
from latentlab.data.config import DataConfig
from latentlab.evaluation.probe import predictability
from latentlab.evaluation.tokenizer import evaluate_tokenizer_run
from latentlab.generation.config import GeneratorConfig, GeneratorRunConfig
from latentlab.generation.train import train_generator
from latentlab.generators.autoregressive import ARConfig
from latentlab.recipes.train import train_tokenizer
from latentlab.tokenizers.bottlenecks import KLConfig, VQConfig
from latentlab.training.config import TrainConfig

from .conftest import tiny_run_config

TOKENIZER_KEYS = {
    "kind", "data", "seed", "mse", "psnr", "ssim", "feature_net_accuracy", "rfd", "rfd/pixels",
    "rfd/ssl",
    "lipschitz_encoder_mean", "lipschitz_encoder_q95", "lipschitz_encoder_max",
    "lipschitz_decoder_mean", "lipschitz_decoder_q95", "lipschitz_decoder_max", "nn_accuracy",
    "predictability", "predictability_unit", "cosine_of", "cosine_histogram", "eigenvalues"}
DISCRETE_KEYS = {"usage", "dead_codes", "perplexity"}
VIEWS = ("pixels", "classifier", "probabilities", "ssl")
GENERATOR_KEYS = {
    "kind", "family", "data", "seed", "samples_file", "class_accuracy", "feature_net_accuracy",
    "ssl_retrieval", "ssl_knn_accuracy", "views", "reference", "samples", "real",
    "heldout_nll", "heldout_bits_per_token", "bits_per_token", "bits_per_dim", "bits_per_image",
    "bits_per_dim_given_label"} | {
    f"{m}/{v}" for m in ("fd", "fd_floor", "fd_inf", "fd_inf_floor", "kid", "kid_std",
                         "precision", "recall", "density", "coverage") for v in VIEWS}


@pytest.fixture(scope="module")
def feature_cache(tmp_path_factory):
    """Shared with the metric tests through the session's base temporary directory."""
    return tmp_path_factory.getbasetemp() / "feature-cache"


def tokenizer_run(path, bottleneck: str):
    cfg = tiny_run_config(steps=60, batch_size=32)
    model = cfg.model
    bn = VQConfig(codebook_size=32) if bottleneck == "vq" else KLConfig()
    train_tokenizer(dataclasses.replace(cfg, model=dataclasses.replace(model, bottleneck=bn)),
                    path)
    return path


@pytest.fixture(scope="module")
def vq_runs(tmp_path_factory):
    """A tiny VQ tokenizer of digits and an autoregressive prior over its tokens."""
    root = tmp_path_factory.mktemp("vq")
    tok = tokenizer_run(root / "tok", "vq")
    cfg = GeneratorRunConfig(
        tokenizer=str(tok), data=DataConfig(spec="digits"),
        generator=GeneratorConfig(family="ar", network=ARConfig(width=32, depth=2, heads=2)),
        train=TrainConfig(steps=30, batch_size=32, warmup=5, log_every=10, eval_every=0,
                          checkpoint_every=100))
    train_generator(cfg, root / "gen")
    return tok, root / "gen"


def scalars(evaluation: dict) -> dict[str, float]:
    return {k: v for k, v in evaluation.items() if isinstance(v, int | float)}


def assert_finite(evaluation: dict) -> None:
    for key, value in scalars(evaluation).items():
        assert math.isfinite(value), (key, value)


def test_evaluate_a_tokenizer_run_keeps_training_metrics_and_adds_every_key(
        vq_runs, feature_cache, capsys):
    tok, _ = vq_runs
    before = json.loads((tok / "metrics.json").read_text())
    code = main(["evaluate", str(tok), "--cache-dir", str(feature_cache), "--probe-steps", "40"])
    assert code == 0 and "tokenizer on digits: mse" in capsys.readouterr().out
    metrics = json.loads((tok / "metrics.json").read_text())
    evaluation = metrics.pop("evaluation")
    assert metrics == before  # training's figures untouched
    assert json.loads((tok / "evaluation.json").read_text()) == evaluation
    assert set(evaluation) == TOKENIZER_KEYS | DISCRETE_KEYS
    assert_finite(evaluation)
    assert evaluation["mse"] == pytest.approx(before["test"]["mse"], rel=1e-6)
    assert evaluation["predictability_unit"] == "bits_per_token"
    assert 0 < evaluation["predictability"] < math.log2(32) + 1
    assert 0 <= evaluation["nn_accuracy"] <= 1
    assert min(evaluation["rfd"], evaluation["rfd/pixels"], evaluation["rfd/ssl"]) > 0
    counts = evaluation["cosine_histogram"]["counts"]
    assert sum(counts) == 32 * 31 // 2 and evaluation["cosine_of"] == "codebook"
    assert sum(evaluation["eigenvalues"]) == pytest.approx(1.0)


def test_evaluate_a_generator_run_writes_samples_and_the_rate(vq_runs, feature_cache,
                                                              tmp_path):
    _, gen = vq_runs
    out = tmp_path / "eval.json"
    code = main(["evaluate", str(gen), "--n", "60", "--cache-dir", str(feature_cache),
                 "--out", str(out)])
    assert code == 0
    evaluation = json.loads(out.read_text())
    assert json.loads((gen / "metrics.json").read_text())["evaluation"] == evaluation
    assert set(evaluation) == GENERATOR_KEYS
    assert evaluation["views"] == list(VIEWS)
    # digits' 360 test images are too few a reference: the training split's 1437 are used
    assert evaluation["reference"] == "train" and evaluation["real"] == 1437
    assert_finite({k: v for k, v in evaluation.items() if k != "views"})
    with np.load(gen / "samples.npz") as f:
        assert f["images"].shape == (60, 8, 8, 1) and f["labels"].tolist()[:11] == [
            *range(10), 0]
        images, labels = f["images"], f["labels"]
    # the same samples in ADM's layout score the same
    adm = tmp_path / "adm.npz"
    np.savez(adm, arr_0=images, arr_1=labels)
    assert main(["evaluate", str(gen), "--samples", str(adm), "--cache-dir", str(feature_cache),
                 "--out", str(tmp_path / "adm.json")]) == 0
    again = json.loads((tmp_path / "adm.json").read_text())
    assert {k: again[k] for k in again if "/" in k} == pytest.approx(
        {k: evaluation[k] for k in evaluation if "/" in k}, rel=1e-9, abs=1e-12)
    # the rate from exact log-likelihoods: the marginal over classes costs at most log2 K more
    # than knowing the label, and tokens cost what the training's held-out figure says
    dims, tokens = 64, 16
    given, marginal = evaluation["bits_per_dim_given_label"], evaluation["bits_per_dim"]
    assert given - 1e-9 <= marginal <= given + math.log2(10) / dims + 1e-9
    assert evaluation["bits_per_token"] == pytest.approx(marginal * dims / tokens)
    assert evaluation["bits_per_token"] == pytest.approx(
        evaluation["heldout_bits_per_token"], abs=math.log2(10) / tokens + 1e-6)


def test_evaluate_a_continuous_tokenizer(tmp_path, feature_cache):
    tok = tokenizer_run(tmp_path / "tok", "kl")
    evaluation = evaluate_tokenizer_run(tok, cache_dir=feature_cache, probe_steps=40)
    assert set(evaluation) == TOKENIZER_KEYS
    assert_finite(evaluation)
    assert evaluation["predictability_unit"] == "flow_mse" and evaluation["cosine_of"] == "latents"


def test_evaluate_refuses_what_is_not_a_run(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    cases = [([str(tmp_path / "empty")], "not a trained tokenizer or generator run"),
             ([str(tmp_path / "missing")], "no such run directory")]
    for argv, message in cases:
        code = main(["evaluate", *argv])
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "empty" / "metrics.json").exists()


def test_token_probe_knows_constant_from_random_tokens():
    g = torch.Generator().manual_seed(0)
    constant = torch.full((200, 2, 4), 3)
    uniform = torch.randint(16, (200, 2, 4), generator=g)
    easy = predictability(constant[:150], constant[150:], steps=60, vocab_size=16)
    hard = predictability(uniform[:150], uniform[150:], steps=60, vocab_size=16)
    assert easy < 0.3  # bits per token of a certain token
    assert hard > 3.9  # held out, nothing beats log2(16) = 4 bits on uniform tokens


def test_flow_probe_finds_structure_and_ignores_scale():
    g = torch.Generator().manual_seed(0)
    theta = torch.rand(600, generator=g) * 2 * math.pi  # a circle embedded in 32 dims
    circle = (torch.stack([theta.cos(), theta.sin()], 1) @ torch.randn(2, 32, generator=g))
    circle = circle.reshape(600, 8, 2, 2)
    noise = torch.randn(600, 8, 2, 2, generator=g)
    structured = predictability(circle[:500], circle[500:], steps=100)
    unstructured = predictability(noise[:500], noise[500:], steps=100)
    assert structured < 0.7 * unstructured
    # per-channel standardisation: shrinking a latent does not make it look predictable
    assert predictability(noise[:500] / 100, noise[500:] / 100, steps=100) == pytest.approx(
        unstructured, rel=1e-4)
    assert predictability(noise[:500], noise[500:], steps=100) == unstructured  # seeded
