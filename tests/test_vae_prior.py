"""`latentlab sample --tokenizer RUN --prior`: the VAE's own sampler, decoded N(0, I) draws."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from latentlab import pixels
from latentlab.recipes.train import train_tokenizer
from latentlab.tokenizers.bottlenecks import KLConfig
from latentlab.tokenizers.tokenizer import Tokenizer
from tests.conftest import run_main, tiny_run_config


@pytest.fixture(scope="module")
def vae(tmp_path_factory):
    cfg = tiny_run_config(steps=10)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, bottleneck=KLConfig()))
    run = tmp_path_factory.mktemp("vae") / "run"
    train_tokenizer(cfg, run)
    return run


def test_prior_samples_are_decoded_standard_normal_draws(vae, tmp_path, capsys):
    out = tmp_path / "prior.npz"
    code, stdout, _ = run_main(capsys, ["sample", "--tokenizer", str(vae), "--prior", "--n",
                                        "12", "--seed", "3", "--out", str(out)])
    assert code == 0 and "12 samples" in stdout
    with np.load(out) as f:
        images, labels = f["images"], f["labels"]
    assert images.shape == (12, 8, 8, 1) and images.dtype == np.uint8
    assert labels.tolist() == [-1] * 12
    tokenizer = Tokenizer.load(vae)
    z = torch.randn(12, 2, 4, 4, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = pixels.to_hwc_uint8(tokenizer.decode(z).float())
    np.testing.assert_array_equal(images, want)
    run_main(capsys, ["sample", "--tokenizer", str(vae), "--prior", "--n", "12", "--seed", "4",
                      "--out", str(tmp_path / "other.npz")])
    with np.load(tmp_path / "other.npz") as f:
        assert not np.array_equal(f["images"], images)


def test_only_a_vae_has_a_prior_and_it_takes_no_condition(vae, tmp_path, capsys):
    ae = tmp_path / "ae"
    train_tokenizer(tiny_run_config(steps=2), ae)
    capsys.readouterr()
    for argv, message in [
        (["--tokenizer", str(ae), "--prior"], "is identity; only a VAE (kl) has a prior"),
        (["--tokenizer", str(vae), "--prior", "--labels", "1"], "takes no labels"),
        (["--tokenizer", str(vae)], "give --generator RUN, or --tokenizer RUN --prior"),
        (["--tokenizer", str(vae), "--prior", "--data", "faces:size=25"],
         "does not divide the image size 25x25"),
    ]:
        code, _, err = run_main(capsys, ["sample", *argv, "--out", str(tmp_path / "x.npz")])
        assert code != 0 and message in err, err
        assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.npz").exists()


@pytest.fixture(scope="module")
def feature_cache(tmp_path_factory):
    """Shared with the metric tests through the session's base temporary directory."""
    return tmp_path_factory.getbasetemp() / "feature-cache"


@pytest.mark.slow
def test_evaluate_prior_scores_the_draws_in_every_view(vae, feature_cache, capsys):
    code, stdout, _ = run_main(capsys, ["evaluate", str(vae), "--prior", "--n", "200",
                                        "--cache-dir", str(feature_cache)])
    assert code == 0 and "vae_prior on digits" in stdout
    found = json.loads((vae / "prior_evaluation.json").read_text())
    assert found["samples"] == 200 and {"pixels", "classifier", "ssl"} <= set(found["views"])
    with np.load(vae / "prior_samples.npz") as f:
        assert f["images"].shape == (200, 8, 8, 1)
    # ten steps of training: its prior is far from the digits in every view
    assert all(found[f"fd_inf/{v}"] > 10 * abs(found[f"fd_inf_floor/{v}"]) for v in found["views"])
    assert json.loads((vae / "metrics.json").read_text())["prior_evaluation"] == found
    for argv, message in [(["--prior", "--samples", "x.npz"], "no --samples"),
                          (["--prior", "--nll"], "no --nll")]:
        code, _, err = run_main(capsys, ["evaluate", str(vae), *argv])
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
