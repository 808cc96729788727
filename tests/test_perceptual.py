"""The perceptual distance over the digits' self-supervised network: zero for identical images,
growing with noise, a shift weighed less against a blur than in pixels; as the tokenizer's loss
option it trains the decoder only through the images (the network is frozen, kept out of the
weights and checkpoints), and bad settings are one-line errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from latentlab.data import load_dataset
from latentlab.errors import ConfigError
from latentlab.evaluation.perceptual import perceptual_network, resolve_perceptual
from latentlab.metrics.perceptual import FrozenFeatures, perceptual_distance
from latentlab.nn.exported import load_program
from latentlab.recipes.baseline import LossConfig
from latentlab.recipes.train import train_tokenizer
from latentlab.tokenizers.tokenizer import WEIGHTS
from tests.conftest import run_main, tiny_run_config


@pytest.fixture(scope="module")
def feature_cache(tmp_path_factory):
    """Shared with the metric tests through the session's base temporary directory."""
    return tmp_path_factory.getbasetemp() / "feature-cache"


@pytest.fixture(scope="module")
def network(feature_cache) -> FrozenFeatures:
    return FrozenFeatures(load_program(perceptual_network("digits", feature_cache)))


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    data = load_dataset("digits", "test")
    return data.__getitems__(list(range(200))).x.float()  # (200, 1, 8, 8) in [-1, 1]


def test_zero_for_identical_images_and_growing_with_noise(network, digits):
    assert torch.equal(network.distance(digits, digits), torch.zeros(len(digits)))
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(digits.shape, generator=g)
    means = [float(network.distance(digits, digits + s * noise).mean()) for s in (0.1, 0.3, 0.9)]
    assert 0 < means[0] < means[1] < means[2], means


def test_a_shift_weighs_less_against_a_blur_than_in_pixels(network, digits):
    """A one-pixel shift moves an 8x8 digit more than a 3x3 blur does (a pixel is 1/8 of its
    width): 3.3x the blur's MSE. The network, trained to match shifted views, weighs the shift
    less against the blur than pixels do (1.9x here), but it does not rank the blur as farther,
    as LPIPS's VGG features do on large natural images (see `metrics.perceptual`)."""
    shifted = torch.roll(digits, shifts=1, dims=-1)  # every digit one pixel to the right
    kernel = torch.ones(1, 1, 3, 3) / 9
    blurred = F.conv2d(F.pad(digits, (1, 1, 1, 1), mode="replicate"), kernel)
    in_pixels = F.mse_loss(shifted, digits) / F.mse_loss(blurred, digits)
    perceived = network.distance(digits, shifted).mean() / network.distance(digits,
                                                                            blurred).mean()
    assert in_pixels > 2.5 and perceived < 0.75 * in_pixels, (float(in_pixels), float(perceived))


def test_layers_weigh_the_same_after_normalising_channels():
    """Two layers, one of features scaled by 1000: each contributes by its direction only."""
    def features(x):
        return (x, 1000 * x.flip(1))

    x, y = torch.randn(4, 3, 5, 5), torch.randn(4, 3, 5, 5)
    unit = lambda t: t / t.norm(dim=1, keepdim=True)  # noqa: E731
    want = (unit(x) - unit(y)).square().sum(1).mean((1, 2))
    torch.testing.assert_close(perceptual_distance(features, x, y), want)


def test_gradients_reach_the_images_not_the_network(network, digits):
    x = digits[:16].clone().requires_grad_()
    before = {k: v.clone() for k, v in network.network.state_dict().items()}
    network.distance(x, digits[16:32]).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in network.network.parameters())
    after = network.network.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics too


@pytest.mark.slow
def test_a_tokenizer_trains_with_it_and_saves_none_of_it(tmp_path, feature_cache, capsys):
    cfg = tiny_run_config(steps=20, checkpoint_every=10)
    cfg = dataclasses.replace(cfg, loss=LossConfig(perceptual=1.0))
    cfg = resolve_perceptual(cfg, feature_cache)
    assert cfg.loss.perceptual_net.endswith(".pt2")
    train_tokenizer(cfg, tmp_path / "run")
    logged = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert '"loss/perceptual"' in logged
    weights = load_file(tmp_path / "run" / "tokenizer" / WEIGHTS)
    assert weights and all(k.startswith(("encoder.", "decoder.", "bottleneck.", "latent_"))
                           for k in weights)
    code, _, err = run_main(capsys, ["train-tokenizer", "--out", str(tmp_path / "run"),
                                     "--resume", "--train.steps", "25"])
    assert code == 0, err
    assert '"step": 25' in (tmp_path / "run" / "metrics.jsonl").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--preset", "mixture-ae", "--loss.perceptual", "1"], "loss.perceptual: mixture: no "
                                                           "self-supervised view"),
    (["--preset", "digits-ae", "--loss.perceptual", "-1"], "loss.perceptual: must be a finite"),
    (["--preset", "digits-ae", "--loss.perceptual", "1", "--loss.perceptual_net", "JUNK"],
     "loss.perceptual_net: "),
])
def test_bad_settings_are_one_line_errors(argv, message, tmp_path, capsys):
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"not a program")
    argv = [str(junk) if a == "JUNK" else a for a in argv]
    code, _, err = run_main(capsys, ["train-tokenizer", *argv, "--train.steps", "2", "--out",
                                     str(tmp_path / "run")])
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run" / "tokenizer").exists()
    with pytest.raises(ConfigError, match="loss.perceptual_net: no network given"):
        from latentlab.recipes.train import build_objective

        cfg = dataclasses.replace(tiny_run_config(), loss=LossConfig(perceptual=1.0))
        build_objective(cfg, load_dataset("digits", "train"))
