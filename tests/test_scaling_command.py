"""`latentlab scaling` end to end on a tiny digits cache, its held-out protocol against analytic
values, and its refusals."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from latentlab.cli import main
from latentlab.data.latent_cache_writer import write_latent_cache
from latentlab.generation.encode import cached_split
from latentlab.nn import num_parameters
from latentlab.recipes.scaling_run import FlatItems, heldout_loss, open_items
from latentlab.recipes.tiny import tiny_generator, tiny_process
from latentlab.recipes.train import train_tokenizer

from .conftest import tiny_run_config

FAST = ["--steps", "30", "--batch_size", "32", "--warmup", "5", "--eval_draws", "2"]


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory):
    """The train split of digits encoded by a continuous tokenizer trained 20 steps."""
    run = tmp_path_factory.mktemp("scaling") / "tok"
    train_tokenizer(tiny_run_config(steps=20), run)
    return cached_split(run, "digits", "train").path


@pytest.fixture(scope="module")
def token_cache(tmp_path_factory):
    """A cache of 4x4 token grids over 8 codes with structure an AR model can learn: each row
    is a run of one code, so a grid is 4 codes and 12 predictable tokens."""
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 8, size=(400, 4))
    grids = torch.from_numpy(np.repeat(rows[:, :, None], 4, axis=2))  # (N, 4, 4)
    out = tmp_path_factory.mktemp("scaling") / "tokens"
    return write_latent_cache(out, [(grids, torch.full((400,), -1))],
                              {"tokenizer": "synthetic", "codebook_size": "8"}, [], "indices")


def run(*argv: str) -> int:
    return main(["scaling", *map(str, argv)])


@pytest.mark.slow
def test_the_command_prints_json_and_writes_the_plot(digits_cache, tmp_path, capsys):
    out = tmp_path / "study"
    assert run("--cache", digits_cache, "--widths", "[8,16,32]", "--predict", "64",
               "--verify", "true", "--out", out, *FAST) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)  # stdout holds the JSON and nothing else
    assert result == json.loads((out / "scaling.json").read_text())
    assert set(result) >= {"widths", "parameters", "losses", "fit", "fit_error", "predict",
                           "setup"}
    assert result["widths"] == [8, 16, 32]
    assert result["setup"]["family"] == "flow" and result["setup"]["item_shape"] == [2, 4, 4]
    sizes = [num_parameters(tiny_generator((2, 4, 4), w, 2)) for w in (8, 16, 32, 64)]
    assert result["parameters"] == sizes[:3]
    assert all(math.isfinite(v) and v > 0 for v in result["losses"])
    pred = result["predict"]
    assert pred["width"] == 64 and pred["parameters"] == sizes[3]
    assert math.isfinite(pred["actual_loss"]) and pred["actual_loss"] > 0
    assert pred["no_gain_relative_error"] == pytest.approx(
        (result["losses"][-1] - pred["actual_loss"]) / pred["actual_loss"])
    if result["fit"] is None:  # 30 steps may not give a usable law: then it says why
        assert result["fit_error"] and pred["predicted_loss"] is None
    else:
        assert set(result["fit"]) == {"E", "A", "alpha", "n_ref", "residuals", "B", "beta",
                                      "s_ref"}
        law = result["fit"]
        assert pred["predicted_loss"] == pytest.approx(
            law["E"] + law["A"] * (sizes[3] / law["n_ref"]) ** -law["alpha"])
        assert pred["relative_error"] == pytest.approx(
            pred["predicted_loss"] / pred["actual_loss"] - 1)
    # per t-bin: the losses of every width, and against the verified width the error and the
    # rho its actual loss implies (sqrt of actual / largest fitted width's loss, at most 1)
    bins = result["per_bin"]
    assert bins["t_bins"] == 4 and len(bins["losses"]) == 3
    assert all(v > 0 for row in bins["losses"] for v in row)
    for b in range(4):
        implied = math.sqrt(min(1.0, bins["actual"][b] / bins["losses"][-1][b]))
        assert bins["rho_implied"][b] == pytest.approx(implied)
        if bins["predicted"][b] is not None:
            assert bins["error"][b] == pytest.approx(bins["predicted"][b] / bins["actual"][b] - 1)
            assert 0 < bins["rho"][b] <= 1
        else:
            assert bins["fit_error"][b]
    assert (out / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for w in (8, 16, 32, 64):
        assert (out / f"width-{w}" / "config.yaml").exists()
    assert "widths: [8, 16, 32]" in (out / "config.yaml").read_text()  # the study's settings

    # --resume reuses the finished runs: the same weights, so the same losses, bit for bit
    assert run("--cache", digits_cache, "--widths", "[8,16,32]", "--predict", "64",
               "--verify", "true", "--out", out, "--resume", *FAST) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["losses"] == result["losses"]
    assert again["train_losses"] == result["train_losses"]  # read back from metrics.jsonl
    assert all(v > 0 for v in result["train_losses"])
    assert again["predict"]["actual_loss"] == pred["actual_loss"]
    # ... and refuses runs made with other settings
    assert run("--cache", digits_cache, "--widths", "[8,16,32]", "--predict", "64",
               "--out", out, "--resume", *FAST, "--lr", "0.01") == 2
    assert "train.lr" in capsys.readouterr().err


@pytest.mark.slow
def test_an_ill_posed_fit_is_reported_not_raised(digits_cache, tmp_path, capsys, caplog):
    # a learning rate of 1e-9 leaves every zero-initialised output at ~0: equal losses
    out = tmp_path / "flat"
    assert run("--cache", digits_cache, "--widths", "[8,16,32]", "--predict", "64",
               "--steps", "2", "--warmup", "0", "--lr", "1e-9", "--eval_draws", "1",
               "--out", out) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["fit"] is None and "does not fall" in result["fit_error"]
    assert result["predict"]["predicted_loss"] is None
    assert "scaling fit refused: the loss does not fall" in caplog.text  # stderr in the CLI
    assert (out / "scaling.png").exists()


@pytest.mark.slow
def test_token_caches_get_the_autoregressive_family(token_cache, tmp_path, capsys):
    assert run("--cache", token_cache, "--widths", "[8,16,32]", "--predict", "64",
               "--out", tmp_path / "ar", *FAST) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["setup"]["family"] == "ar" and result["setup"]["eval_draws"] == 0
    # every model learns some of the structure: below the uniform log 8 nats per token
    assert all(0 < v < math.log(8) for v in result["losses"])


def test_heldout_loss_of_a_zero_prediction_is_analytic(digits_cache):
    """A fresh MLP denoiser predicts exactly 0 (zero-init output), so the flow loss is
    E|eps - x0|^2 per element = 1 + mean(x0^2), and the same on every call (fixed draws)."""
    _, _, held, _ = open_items(digits_cache, None, 0.1)
    model = tiny_generator((2, 4, 4), 16, 2)
    x0 = held.__getitems__(list(range(len(held)))).x  # (N, 32)
    loss = heldout_loss(model, tiny_process("flow"), held, draws=64)
    assert loss == pytest.approx(1 + float(x0.pow(2).mean()), rel=0.01)
    assert heldout_loss(model, tiny_process("flow"), held, draws=64) == loss


def test_heldout_nll_of_a_fresh_transformer_is_near_uniform(token_cache):
    _, _, held, _ = open_items(token_cache, None, 0.1)
    assert len(held) == 40 and held.shape == (16,)
    model = tiny_generator((4, 4), 32, 1, vocab_size=8)
    assert heldout_loss(model, None, held, draws=1) == pytest.approx(math.log(8), rel=0.01)


def test_heldout_items_are_the_tail_and_disjoint_from_training(digits_cache):
    data, train, held, text = open_items(digits_cache, None, 0.1)
    assert isinstance(train, FlatItems) and len(train) + len(held) == len(data)
    assert held.indices.tolist() == list(range(len(train), len(data)))
    assert text.startswith(f"last {len(held)} of {len(data)}")


@pytest.mark.parametrize("argv, words", [
    (["--cache", "{tmp}/nowhere"], "cache.json: missing"),
    (["--cache", "{cache}", "--family", "ar"], "family: ar models token indices"),
    (["--cache", "{cache}", "--widths", "[64,32,128]"], "widths: need at least 3 increasing"),
    (["--cache", "{cache}", "--widths", "[32,64]"], "widths: need at least 3 increasing"),
    (["--cache", "{cache}", "--predict", "100"], "predict: must exceed the largest"),
    (["--cache", "{cache}", "--heldout_fraction", "1.5"], "heldout_fraction: must be in"),
])
def test_bad_input_is_one_line_and_exit_2(digits_cache, tmp_path, capsys, argv, words):
    argv = [a.format(tmp=tmp_path, cache=digits_cache) for a in argv]
    assert run(*argv, "--out", tmp_path / "out") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert words in captured.err and captured.err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_a_foreign_directory_is_not_overwritten(digits_cache, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.tex").write_text("keep me")
    assert run("--cache", digits_cache, "--out", tmp_path / "out", "--overwrite") == 2
    assert "not a latentlab run directory" in capsys.readouterr().err
    assert (tmp_path / "out" / "thesis.tex").read_text() == "keep me"
