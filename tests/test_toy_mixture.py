"""The DAE paper's toy table (`latentlab toy-mixture`): the 1-NN accuracies follow the data's
class structure, the summary is the mean and std of the seeds, and the command prints JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from latentlab.study.toy_mixture import ToyConfig, run_toy
from tests.conftest import run_main

# 4 clusters in 6 dims, small nets, a few hundred steps: about a second a seed
TINY = dict(k=4, d=6, n=256, seeds=2, steps=200, batch_size=64, encoder_hidden=(32, 32),
            decoder_hidden=(32, 32))


def test_separated_clusters_give_a_latent_that_classifies():
    # kl_weight 1e-2: the default 1 / d (decoder variance 1/2) sits at the collapse threshold of
    # this data (variance 1/2 + std^2 per axis), see docs/toy-mixture.md
    result = run_toy(ToyConfig(**TINY, std=0.05, kl_weight=1e-2))
    runs, summary = result["runs"], result["summary"]
    assert [r["seed"] for r in runs] == [0, 1]
    # std 0.05 on centres 1.41 apart: the data itself classifies perfectly
    assert summary["bayes_acc"]["mean"] == 100.0
    assert summary["latent_acc"]["mean"] > 90.0
    assert summary["recon_acc"]["mean"] > 90.0
    assert summary["recon_mse"]["mean"] < 0.5 * summary["mean_item_mse"]["mean"]
    # the summary is the seeds' mean and sample std, in %
    values = 100 * np.array([r["latent_acc"] for r in runs])
    assert summary["latent_acc"]["mean"] == pytest.approx(values.mean())
    assert summary["latent_acc"]["std"] == pytest.approx(values.std(ddof=1))


def test_pure_noise_gives_chance_accuracy():
    # std 5 buries centres 1.41 apart: no classifier, latent or not, does much better than 1/4
    result = run_toy(ToyConfig(**TINY, std=5.0))
    summary = result["summary"]
    assert result["config"]["kl_weight"] == pytest.approx(1 / 6)  # None resolves to 1 / d
    for key in ("latent_acc", "recon_acc", "bayes_acc"):
        assert 10.0 < summary[key]["mean"] < 45.0, (key, summary[key])


def test_hidden_widths_one_number_is_both_layers():
    assert ToyConfig(encoder_hidden=64).encoder_hidden == (64, 64)
    assert ToyConfig(decoder_hidden=[64, 32, 16]).decoder_hidden == (64, 32, 16)


def test_command_prints_the_json_it_writes(capsys, tmp_path):
    out = tmp_path / "toy"
    argv = ["toy-mixture", "--k", "4", "--d", "6", "--n", "128", "--seeds", "1", "--steps",
            "40", "--batch_size", "32", "--encoder_hidden", "16", "--decoder_hidden", "[16,8]",
            "--dae", "true", "--threads", "0", "--out", str(out)]
    code, stdout, _ = run_main(capsys, argv)
    assert code == 0
    result = json.loads(stdout)
    assert result == json.loads((out / "toy.json").read_text())
    assert result["config"]["dae"] and result["config"]["decoder_hidden"] == [16, 8]
    assert result["config"]["encoder_hidden"] == [16, 16]
    assert set(result["summary"]) >= {"latent_acc", "recon_acc", "recon_mse"}
    assert (out / "seed-0" / "tokenizer").is_dir()
    assert "decoder_hidden: [16, 8]" in (out / "config.yaml").read_text()
    # the directory now holds a study: a second one is refused, in one line
    code, stdout, err = run_main(capsys, argv)
    assert code == 2 and stdout == "" and "already holds a run" in err
    # resumed, it reuses the finished seed (its figures unchanged) and adds the next one
    code, stdout, _ = run_main(capsys, [*argv, "--resume", "--seeds", "2"])
    again = json.loads(stdout)
    assert code == 0 and [r["seed"] for r in again["runs"]] == [0, 1]
    assert again["runs"][0] == result["runs"][0]


@pytest.mark.parametrize("argv, message", [
    (["--k", "1"], "k: need at least 2 clusters"),
    (["--encoder_hidden", "0"], "encoder_hidden: widths must be >= 1"),
    (["--decoder_hidden", "6x"], "decoder_hidden must be list of int | int, got '6x'"),
    (["--dae", "true", "--weak_width", "1.5"], "weak_width: must be in (0, 1]"),
    (["--std", "-1"], "std: must be >= 0"),
    (["--stpes", "3"], "unrecognized arguments: --stpes"),
    (["--threads", "-1"], "--threads: must be >= 0"),
])
def test_bad_options_are_one_line_exit_2(capsys, argv, message):
    code, stdout, err = run_main(capsys, ["toy-mixture", *argv])
    assert code == 2 and stdout == ""
    assert message in err and len(err.strip().splitlines()) == 1
