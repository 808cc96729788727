"""diffusers autoencoders as decomposers: folders read and written without losing a weight,
fine-tuned with a latentlab recipe (`--init`), generators trained on their latents, and
one-line errors for folders that do not fit. Tiny random models, made with `save_pretrained`."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, VQModel, __version__

from latentlab.cli import main
from latentlab.data import load_dataset
from latentlab.data.config import DataConfig
from latentlab.errors import CheckpointError
from latentlab.generation.config import GeneratorConfig, GeneratorRunConfig
from latentlab.generation.encode import STATISTICS, cached_split, load_tokenizer
from latentlab.generation.train import train_generator
from latentlab.generators.denoisers.dit import DiTConfig
from latentlab.recipes.baseline import evaluate_tokenizer
from latentlab.recipes.train import train_tokenizer
from latentlab.tokenizers.bottlenecks import KLConfig
from latentlab.tokenizers.diffusers_ae import DiffusersConfig
from latentlab.tokenizers.tokenizer import Tokenizer, TokenizerConfig, fingerprint
from latentlab.training.config import TrainConfig
from tests.conftest import run_main, tiny_run_config
from tests.test_recipes import COUPLED

LEVELS = dict(down_block_types=("DownEncoderBlock2D",) * 2,
              up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
              layers_per_block=1, norm_num_groups=8, sample_size=8)


def folder(path, cls=AutoencoderKL, channels: int = 1, **config):
    torch.manual_seed(0)
    model = cls(in_channels=channels, out_channels=channels, latent_channels=2,
                **LEVELS | config).eval()
    model.save_pretrained(path)
    return model


@pytest.fixture(scope="module")
def kl_folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("sd-vae")
    return path, folder(path)


def test_an_autoencoderkl_folder_reads_and_writes_back_identically(kl_folder, tmp_path):
    path, model = kl_folder
    tokenizer = Tokenizer.load(path)
    assert tokenizer.cfg.arch.kind == "diffusers" and tokenizer.cfg.bottleneck.kind == "kl"
    assert not tokenizer.fitted
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    with torch.no_grad():
        theirs = model.decode(model.encode(x).latent_dist.mode()).sample
        out = tokenizer.encode(x)
        ours = tokenizer.decode(out.latent)
        moments = model.quant_conv(model.encoder(x))
    torch.testing.assert_close(out.latent, moments.chunk(2, dim=1)[0])
    torch.testing.assert_close(ours, theirs)
    # written back: RUN/tokenizer/diffusers, which diffusers itself loads
    tokenizer.latent_shift.fill_(0.5)
    tokenizer.save(tmp_path / "tok")
    again = AutoencoderKL.from_pretrained(tmp_path / "tok" / "diffusers").eval()
    with torch.no_grad():
        torch.testing.assert_close(again.decode(again.encode(x).latent_dist.mode()).sample, ours)
    config = json.loads((tmp_path / "tok" / "diffusers" / "config.json").read_text())
    assert config["latents_mean"] == [0.5, 0.5] and config["scaling_factor"] == 1.0
    assert config["_diffusers_version"] == __version__
    # and latentlab's own loading of that run gives the same model
    torch.testing.assert_close(Tokenizer.load(tmp_path / "tok").decode(out.latent), ours)


def test_a_vqmodel_folder_gives_the_same_codes_and_images(tmp_path):
    model = folder(tmp_path / "vq", VQModel, channels=3, num_vq_embeddings=16)
    tokenizer = Tokenizer.load(tmp_path / "vq")
    assert tokenizer.discrete and tokenizer.bottleneck.codebook_size == 16
    x = torch.rand(3, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        h = model.encode(x).latents
        _, _, (_, _, theirs) = model.quantize(h)
        out = tokenizer.encode(x)
        assert torch.equal(out.indices.flatten(), theirs.flatten())
        torch.testing.assert_close(tokenizer.decode(out.indices), model(x).sample)
    tokenizer.save(tmp_path / "tok")
    again = VQModel.from_pretrained(tmp_path / "tok" / "diffusers").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x).sample, tokenizer.decode(out.indices))


def test_a_fresh_diffusers_arch_trains_and_saves_its_folder(tmp_path):
    model = TokenizerConfig(arch=DiffusersConfig(block_out_channels=(8, 16)), latent_channels=2)
    cfg = dataclasses.replace(tiny_run_config(steps=30), model=model)
    metrics = train_tokenizer(cfg, tmp_path / "run")
    assert metrics["test"]["mse"] < metrics["mean_image_mse"]
    assert not (tmp_path / "run" / "tokenizer" / "diffusers").exists()  # identity: no class
    vae = dataclasses.replace(model, bottleneck=KLConfig(weight=1e-4))
    train_tokenizer(dataclasses.replace(tiny_run_config(steps=5), model=vae), tmp_path / "kl")
    tokenizer = Tokenizer.load(tmp_path / "kl")
    again = AutoencoderKL.from_pretrained(tmp_path / "kl" / "tokenizer" / "diffusers").eval()
    x = load_dataset("digits", "test").__getitems__(list(range(8))).x
    with torch.no_grad():
        torch.testing.assert_close(again.decode(again.encode(x).latent_dist.mode()).sample,
                                   tokenizer.decode(tokenizer.encode(x).latent))


def test_init_fine_tunes_a_folder_with_the_coupled_recipe(kl_folder, tmp_path):
    path, _ = kl_folder
    test = load_dataset("digits", "test")
    before = evaluate_tokenizer(Tokenizer.load(path), test)["mse"]
    cfg = dataclasses.replace(tiny_run_config(steps=40), recipe="coupled", coupled=COUPLED,
                              init=str(path))
    metrics = train_tokenizer(cfg, tmp_path / "ft")
    assert metrics["test"]["mse"] < 0.5 * before, (before, metrics["test"])
    tuned = AutoencoderKL.from_pretrained(tmp_path / "ft" / "tokenizer" / "diffusers")
    assert tuned.config.block_out_channels == [8, 16]
    # the folder itself is untouched
    assert evaluate_tokenizer(Tokenizer.load(path), test)["mse"] == before


@pytest.mark.slow
def test_a_generator_trains_on_a_folders_latents_with_fitted_statistics(kl_folder, tmp_path):
    path, _ = kl_folder
    cfg = GeneratorRunConfig(
        tokenizer=str(path), data=DataConfig(spec="digits"),
        generator=GeneratorConfig(family="flow", network=DiTConfig(width=16, depth=1, heads=2)),
        train=TrainConfig(steps=10, batch_size=32, warmup=2, log_every=5, eval_every=0,
                          checkpoint_every=100))
    train_generator(cfg, tmp_path / "gen")
    cache = cached_split(path, "digits", "train")
    stats = json.loads(cache.source[STATISTICS])
    latents = torch.stack([cache.load(i)[0] for i in range(len(cache))])
    torch.testing.assert_close(latents.mean((0, 2, 3)), torch.zeros(2), atol=1e-4, rtol=0)
    torch.testing.assert_close(latents.std((0, 2, 3)), torch.ones(2), atol=1e-3, rtol=0)
    again = load_tokenizer(path, "digits")  # read back from the cache record, not refitted
    assert again.latent_scale.tolist() == pytest.approx(stats["scale"], rel=1e-6)
    assert main(["sample", "--generator", str(tmp_path / "gen"), "--n", "4", "--steps", "2",
                 "--out", str(tmp_path / "s.npz")]) == 0
    with np.load(tmp_path / "s.npz") as f:
        assert f["images"].shape == (4, 8, 8, 1)


def test_folders_that_do_not_fit_are_one_line_errors(kl_folder, tmp_path, capsys):
    path, _ = kl_folder
    unet = tmp_path / "unet"
    unet.mkdir()
    (unet / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(CheckpointError, match="UNet2DModel, not an autoencoder"):
        Tokenizer.load(unet)
    colour = tmp_path / "rgb"
    folder(colour, channels=3)
    code, _, err = run_main(capsys, ["train-tokenizer", "--data.spec", "digits", "--init",
                                     str(colour), "--out", str(tmp_path / "r")])
    assert code != 0 and "takes images of 3 channels, the data has 1" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run_main(capsys, ["encode", "--tokenizer", str(path), "--data",
                                     "faces:size=25", "--out", str(tmp_path / "c")])
    assert code != 0 and "block_out_channels: downsampling factor 2 does not divide" in err
    damaged = tmp_path / "damaged"
    folder(damaged)
    weights = damaged / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    code, _, err = run_main(capsys, ["encode", "--tokenizer", str(damaged), "--data", "digits",
                                     "--out", str(tmp_path / "d")])
    assert code != 0 and "cannot be read as a AutoencoderKL" in err
    assert len(err.strip().splitlines()) == 1


def test_the_fingerprint_of_a_folder_follows_its_weights(tmp_path):
    folder(tmp_path / "a")
    first = fingerprint(tmp_path / "a")
    folder(tmp_path / "b")
    assert fingerprint(tmp_path / "b") == first
    torch.manual_seed(1)
    AutoencoderKL(in_channels=1, out_channels=1, latent_channels=2, **LEVELS).save_pretrained(
        tmp_path / "b")
    assert fingerprint(tmp_path / "b") != first
