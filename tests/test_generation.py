"""The generator pipeline end to end: train-generator, encode, sample, on real (toy) data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from latentlab.cli import main
from latentlab.data.builtin import mixture_centres
from latentlab.data.config import DataConfig
from latentlab.generation.config import GeneratorConfig, GeneratorRunConfig
from latentlab.generation.sample import sample_to_file
from latentlab.generation.train import train_generator
from latentlab.generators.autoregressive import ARConfig
from latentlab.generators.denoisers.dit import DiTConfig
from latentlab.generators.denoisers.mlp import MLPDenoiserConfig
from latentlab.recipes.train import train_tokenizer
from latentlab.tokenizers.bottlenecks import KLConfig, VQConfig
from latentlab.training.config import TrainConfig

from .conftest import replace_train

MIXTURE = "mixture:std=0.05,n=4000"


def mixture_run(family: str, **train) -> GeneratorRunConfig:
    settings = dict(steps=400, batch_size=256, lr=3e-3, warmup=20, ema=0.99, log_every=100,
                    eval_every=0, checkpoint_every=1000, precision="fp32")
    return GeneratorRunConfig(
        data=DataConfig(spec=MIXTURE),
        generator=GeneratorConfig(family=family, steps=50, network=MLPDenoiserConfig(width=128)
                                  if family in ("flow", "ddpm", "vpsde") else None),
        train=TrainConfig(**{**settings, **train}))


def coverage(vectors: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Share of samples nearest each centre, share within 0.3 of a centre, share of samples
    nearest the centre of their own label."""
    centres = np.asarray(mixture_centres(8, 10, 0))
    dist = ((vectors[:, None] - centres[None]) ** 2).sum(-1)
    nearest = dist.argmin(1)
    return (np.bincount(nearest, minlength=8) / len(vectors),
            float((np.sqrt(dist.min(1)) < 0.3).mean()), float((nearest == labels).mean()))


@pytest.mark.slow
@pytest.mark.parametrize("family", ["flow", "ddpm", "vpsde", "gan"])
def test_each_family_covers_every_mode_of_the_mixture(tmp_path, family):
    cfg = mixture_run(family)
    if family == "gan":  # DCGAN settings: constant lr, Adam beta1 0.5, no clipping, no EMA
        cfg = replace_train(cfg, steps=1500, lr=1e-3, betas=(0.5, 0.999), ema=0.0,
                            schedule="constant", grad_clip=0.0, warmup=0)
        cfg = dataclasses.replace(cfg, generator=dataclasses.replace(
            cfg.generator, network=dataclasses.replace(cfg.generator.network, noise_dim=8)))
    train_generator(cfg, tmp_path / "run")
    sample_to_file(tmp_path / "run", 1600, tmp_path / "s.npz", steps=50)
    with np.load(tmp_path / "s.npz") as f:
        shares, near, right_class = coverage(f["vectors"], f["labels"])
        assert f["labels"].dtype == np.int64
    assert shares.min() > 0.05, shares  # every one of the 8 centres is reached
    assert near > 0.7 and right_class > 0.7, (near, right_class)


def tiny_tokenizer_run(tiny_config, tmp_path, preset_kind: str, seed: int = 0, steps: int = 30):
    """A tiny digits tokenizer: what these tests check holds for any weights, so few steps."""
    cfg = tiny_config(steps=steps, batch_size=32, seed=seed)
    model = cfg.model
    bottleneck = VQConfig(codebook_size=32) if preset_kind == "vq" else KLConfig()
    model = dataclasses.replace(model, bottleneck=bottleneck)
    train_tokenizer(dataclasses.replace(cfg, model=model), tmp_path / "tok")
    return tmp_path / "tok"


@pytest.mark.slow
@pytest.mark.parametrize("kind, family", [("kl", "flow"), ("vq", "ar")])
def test_latent_pipeline_writes_the_public_samples_format(tmp_path, tiny_config, kind, family):
    tok = tiny_tokenizer_run(tiny_config, tmp_path, kind)
    cfg = GeneratorRunConfig(
        tokenizer=str(tok), data=DataConfig(spec="digits"),
        generator=GeneratorConfig(family=family, network=(
            ARConfig if family == "ar" else DiTConfig)(width=32, depth=2, heads=2)),
        train=TrainConfig(steps=30, batch_size=32, warmup=5, log_every=10, eval_every=0,
                          checkpoint_every=100))
    metrics = train_generator(cfg, tmp_path / "gen")
    assert metrics["modelled"]["kind"] == ("indices" if kind == "vq" else "latents")
    assert (tok / "caches" / "digits-train" / "cache.json").exists()  # beside its tokenizer
    code = main(["sample", "--generator", str(tmp_path / "gen"), "--n", "12", "--labels",
                 "3,4", "--steps", "4", "--out", str(tmp_path / "s.npz"), "--grid",
                 str(tmp_path / "s.png"), "--cfg", "2.0"])
    assert code == 0
    with np.load(tmp_path / "s.npz") as f:
        assert f["images"].dtype == np.uint8 and f["images"].shape == (12, 8, 8, 1)
        assert f["labels"].tolist() == [3, 4] * 6
        images = f["images"]
    assert (tmp_path / "s.png").stat().st_size > 0
    # the ADM evaluation suite's layout beside ours, the same samples
    assert main(["sample", "--generator", str(tmp_path / "gen"), "--n", "12", "--labels",
                 "3,4", "--steps", "4", "--out", str(tmp_path / "adm.npz"), "--cfg", "2.0",
                 "--format", "adm"]) == 0
    with np.load(tmp_path / "adm.npz") as f:
        np.testing.assert_array_equal(f["arr_0"], images)
        assert f["arr_1"].tolist() == [3, 4] * 6 and f["arr_0"].dtype == np.uint8


@pytest.mark.slow
def test_bad_requests_are_one_line_errors(tmp_path, capsys, tiny_config):
    tok = tiny_tokenizer_run(tiny_config, tmp_path, "kl", steps=2)
    other = tiny_tokenizer_run(tiny_config, tmp_path / "b", "kl", seed=1, steps=2)  # other weights
    train_generator(dataclasses.replace(mixture_run("flow", steps=5), data=DataConfig(
        spec="mixture:n=200,k=8")), tmp_path / "gen")
    unconditional = tmp_path / "gen"
    cases = [
        (["sample", "--generator", str(unconditional), "--out", "x.npz", "--steps", "0"],
         "--steps must be >= 1"),
        (["sample", "--generator", str(unconditional), "--out", "x.npz", "--labels", "9"],
         "--labels: 9 is outside the trained classes 0..7"),
        (["sample", "--generator", str(tmp_path), "--out", "x.npz"], "not a generator run"),
        (["sample", "--generator", str(unconditional), "--out", "x.npz", "--format", "adm"],
         "--format adm: the ADM layout holds images"),
    ]
    # a cache written by one tokenizer is refused by another, naming both
    main(["encode", "--tokenizer", str(tok), "--data", "digits"])
    cache = tok / "caches" / "digits-train"
    (other / "caches").mkdir()
    cache.rename(other / "caches" / "digits-train")
    cases.append((["train-generator", "--tokenizer", str(other), "--data.spec", "digits",
                   "--out", str(tmp_path / "g2"), "--train.steps", "1"],
                  "was made by tokenizer"))
    for argv, message in cases:
        capsys.readouterr()  # drop what training printed
        code = main(argv)
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and len(err.splitlines()) == 1, (argv, err)


def test_guidance_needs_a_conditional_generator(tmp_path, capsys):
    cfg = mixture_run("flow", steps=3)  # on 8x8 images: the network the data picks (a DiT)
    cfg = dataclasses.replace(cfg, data=DataConfig(spec="npz:" + str(_unlabelled(tmp_path))),
                              generator=dataclasses.replace(cfg.generator, network=None))
    train_generator(cfg, tmp_path / "gen")
    capsys.readouterr()
    code = main(["sample", "--generator", str(tmp_path / "gen"), "--out",
                 str(tmp_path / "x.npz"), "--cfg", "2"])
    assert code == 2 and "needs a conditional generator" in capsys.readouterr().err


def _unlabelled(tmp_path):
    path = tmp_path / "vectors.npz"
    images = (torch.rand(64, 8, 8) * 255).to(torch.uint8).numpy()
    np.savez(path, images=images)
    return path


@pytest.mark.slow
def test_autoregressive_prior_over_vq_tokens_covers_the_mixture(tmp_path, tiny_config):
    """AR over the indices of a vector VQ tokenizer: one token per item, decoded to 10-D."""
    from latentlab.recipes.presets import TOKENIZER_PRESETS

    tok_cfg = replace_train(TOKENIZER_PRESETS["mixture-vq"], steps=300, eval_every=0,
                            checkpoint_every=1000, log_every=100)
    tok_cfg = dataclasses.replace(tok_cfg, data=DataConfig(spec=MIXTURE))
    train_tokenizer(tok_cfg, tmp_path / "tok")
    cfg = dataclasses.replace(mixture_run("ar", steps=300, lr=1e-3), tokenizer=str(
        tmp_path / "tok"), generator=GeneratorConfig(family="ar", network=ARConfig(
            width=64, depth=2, heads=2)))
    train_generator(cfg, tmp_path / "gen")
    sample_to_file(tmp_path / "gen", 1600, tmp_path / "s.npz")
    with np.load(tmp_path / "s.npz") as f:
        shares, near, right_class = coverage(f["vectors"], f["labels"])
    assert shares.min() > 0.05 and near > 0.7 and right_class > 0.7, (shares, near, right_class)
