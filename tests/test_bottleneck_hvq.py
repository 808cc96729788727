"""VQ-VAE-2's hierarchical bottleneck: the two levels' shapes and token order, indices <-> codes
exactly, the bottom level conditioned on the top in encoding and in decoding, the one-line
errors, a short digits run that learns with both codebooks in use, and an autoregressive prior
over its two levels (the top first) through the pipeline."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from latentlab.cli import main
from latentlab.recipes.train import train_tokenizer
from latentlab.tokenizers.bottlenecks import HierarchicalVQ, HVQConfig
from latentlab.tokenizers.conv import ConvConfig
from latentlab.tokenizers.tokenizer import Tokenizer, TokenizerConfig
from tests.conftest import run_main, tiny_run_config

D, F, K = 3, 16, 16  # code channels per level, encoder features, codebook size


def warmed(seed: int = 0) -> HierarchicalVQ:
    """A bottleneck after one training step (both codebooks initialised), in eval mode."""
    torch.manual_seed(seed)
    bottleneck = HierarchicalVQ(2 * D, HVQConfig(codebook_size=K, hidden=F))
    bottleneck.train()(features(seed=7))
    return bottleneck.eval()


def features(b: int = 16, side: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, F, side, side, generator=torch.Generator().manual_seed(seed))


def test_latent_holds_both_levels_and_the_indices_put_the_top_grid_first():
    bottleneck = warmed()
    z = features()
    out = bottleneck(z)
    assert out.latent.shape == (16, 2 * D, 8, 8) and out.indices.shape == (16, 16 + 64)
    top, bottom = bottleneck.split(out.indices)
    assert top.shape == (16, 4, 4) and bottom.shape == (16, 8, 8)
    # the second half of the latent is the top level's code of each 2x2 block
    codes = bottleneck.top.indices_to_codes(top)
    assert torch.equal(out.latent[:, D:, ::2, ::2], codes)
    assert torch.equal(out.latent[:, D:, 1::2, 1::2], codes)
    assert torch.equal(out.latent[:, :D], bottleneck.bottom.indices_to_codes(bottom))
    assert out.indices.min() >= 0 and out.indices.max() < K
    assert bottleneck.index_shape((8, 8)) == (80,)


def test_indices_and_codes_map_exactly_both_ways():
    bottleneck = warmed()
    out = bottleneck(features())
    assert torch.equal(bottleneck.indices_to_codes(out.indices), out.latent)
    assert torch.equal(bottleneck.codes_to_indices(out.latent), out.indices)
    every = torch.arange(5 * 16).remainder(K).view(1, 80)  # each code of both levels
    assert torch.equal(bottleneck.codes_to_indices(bottleneck.indices_to_codes(every)), every)


def test_the_bottom_level_is_encoded_given_the_top_one():
    bottleneck = warmed()
    z = features()
    assert bottleneck.bottom_in.weight.shape[1] == 2 * F  # encoder features + the decoded top
    with torch.no_grad():
        bottleneck.top_decoder[-1].bias.add_(3.0)  # another decoding of the same top codes
    changed = bottleneck(z).indices[:, 16:]
    assert not torch.equal(changed, warmed()(z).indices[:, 16:])


def test_the_decoder_uses_the_top_codes():
    torch.manual_seed(0)
    cfg = TokenizerConfig(arch=ConvConfig(channels=16, ch_mult=(1, 2)), latent_channels=2 * D,
                          bottleneck=HVQConfig(codebook_size=K, hidden=F))
    tokenizer = Tokenizer(cfg, 1).eval()
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    indices = tokenizer.encode(x).indices  # (4, 4 * 4 + 8 * 8)
    other_top = indices.clone()
    other_top[:, :16] = (indices[:, :16] + 1) % K  # the same bottom codes under another top
    with torch.no_grad():
        a, b = tokenizer.decode(indices), tokenizer.decode(other_top)
    assert a.shape == (4, 1, 16, 16) and (a - b).abs().mean() > 1e-3
    # and only the top: the same indices decode to the same images
    assert torch.equal(a, tokenizer.decode(indices.clone()))


def test_gradient_reaches_the_encoder_features_through_both_levels():
    bottleneck = warmed()
    bottleneck.train()
    z = features().requires_grad_()
    out = bottleneck(z)
    (out.latent.square().sum() + out.loss).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert bottleneck.top_encoder[0].weight.grad.abs().sum() > 0
    assert bottleneck.bottom_in.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("side, channels, match", [
    ((6, 6), 2 * D, None), ((7, 7), 2 * D, "even side"), ((8, 4), 2 * D, "square"),
    ((8, 8), 2 * D + 1, "latent_channels")])
def test_grids_and_channels_it_cannot_take_are_one_line_errors(side, channels, match):
    if match == "latent_channels":
        with pytest.raises(ValueError, match=match):
            HierarchicalVQ(channels, HVQConfig(hidden=F))
        return
    cfg = TokenizerConfig(arch=ConvConfig(channels=16, ch_mult=(1,)), latent_channels=channels,
                          bottleneck=HVQConfig(codebook_size=K, hidden=F))
    tokenizer = Tokenizer(cfg, 1)
    if match is None:
        assert tokenizer.index_shape((1, *side)) == (9 + 36,)
        return
    with pytest.raises(ValueError, match=f"bottleneck.kind: hvq .*{match}"):
        tokenizer.latent_shape((1, *side))
    with pytest.raises(ValueError, match="multiple of 8"):
        HVQConfig(hidden=12)


def test_a_short_digits_run_learns_with_both_codebooks_in_use(tmp_path):
    cfg = tiny_run_config(steps=80, lr=5e-3)
    model = dataclasses.replace(cfg.model, latent_channels=2 * D,
                                bottleneck=HVQConfig(codebook_size=K, hidden=F))
    metrics = train_tokenizer(dataclasses.replace(cfg, model=model), tmp_path / "run")
    assert metrics["test"]["mse"] < 0.6 * metrics["mean_image_mse"], metrics["test"]
    tokenizer = Tokenizer.load(tmp_path / "run")
    x = torch.rand(64, 1, 8, 8) * 2 - 1
    top, bottom = tokenizer.bottleneck.split(tokenizer.encode(x).indices)
    assert top.unique().numel() > 2 and bottom.unique().numel() > 2


def train_prior(tok, out, family: str, *network: str) -> dict:
    """train-generator of `family` on the tokenizer run `tok`, 30 steps; its metrics."""
    assert main(["train-generator", "--tokenizer", str(tok), "--data.spec", "digits",
                 "--generator.family", family, *network, "--train.steps", "30",
                 "--train.batch_size", "32", "--train.eval_every", "0", "--out", str(out)]) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_priors_model_both_levels_the_top_first_and_their_samples_decode(tmp_path):
    cfg = tiny_run_config(steps=40, lr=5e-3)
    model = dataclasses.replace(cfg.model, latent_channels=2 * D,
                                bottleneck=HVQConfig(codebook_size=K, hidden=F))
    train_tokenizer(dataclasses.replace(cfg, model=model), tmp_path / "tok")
    # one stream, a 2x2 top grid then a 4x4 bottom one (digits 8x8, factor 2): an AR
    # transformer over it, and VQ-VAE-2's own pair of PixelCNNs (the bottom given the top)
    ar = train_prior(tmp_path / "tok", tmp_path / "ar", "ar", "--generator.network.kind", "ar",
                     "--generator.network.width", "32", "--generator.network.depth", "1",
                     "--generator.network.heads", "2")
    pixelcnn = train_prior(tmp_path / "tok", tmp_path / "pc", "pixelcnn",
                           "--generator.network.kind", "pixelcnn",
                           "--generator.network.channels", "16")
    for run, metrics in (("ar", ar), ("pc", pixelcnn)):
        assert metrics["modelled"]["shape"] == [20]
        assert metrics["test"]["bits_per_token"] < math.log2(K), (run, metrics["test"])
        assert main(["sample", "--generator", str(tmp_path / run), "--n", "8", "--out",
                     str(tmp_path / f"{run}.npz")]) == 0
        with np.load(tmp_path / f"{run}.npz") as f:
            assert f["images"].shape == (8, 8, 8, 1)


def test_the_coupled_recipes_refuse_it_in_one_line(tmp_path, capsys):
    code, _, err = run_main(capsys, ["train-tokenizer", "--preset", "digits-vqvae2", "--recipe",
                                     "coupled", "--coupled.big_parameters", "100000",
                                     "--out", str(tmp_path / "run")])
    assert code == 2 and "recipe: the coupled recipes" in err and "hvq" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run" / "tokenizer").exists()
