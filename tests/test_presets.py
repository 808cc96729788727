"""Every tokenizer preset: its YAML file matches it, it builds on its data with a finite
gradient, and a short run of one preset per dataset and per bottleneck beats the mean image."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from latentlab import config as C
from latentlab.data import load_dataset
from latentlab.recipes.presets import TOKENIZER_PRESETS, preset_yaml
from latentlab.recipes.train import (
    TokenizerRunConfig,
    build_objective,
    build_tokenizer,
    train_tokenizer,
)
from latentlab.training.flops import first_batch

from .conftest import replace_train

ROOT = Path(__file__).resolve().parents[1] / "configs"


def test_preset_files_match_the_registry_and_show_only_what_acts():
    """configs/*.yaml are the presets of the code, not a second copy that drifts, and they hold
    only the chosen kinds' settings (no other bottleneck's, architecture's or recipe's)."""
    for name, preset in TOKENIZER_PRESETS.items():
        path = ROOT / f"{name}.yaml"
        assert path.read_text() == preset_yaml(name), f"{name}: regenerate it with preset_yaml"
        assert C.load(TokenizerRunConfig, path) == preset, name
        assert len(path.read_text().splitlines()) <= 80, name
        keys = {line.split(":")[0].strip() for line in path.read_text().splitlines()
                if not line.lstrip().startswith("#")}
        assert not keys & {"dae", "coupled", "discriminator", "in_channels", "conv", "mlp"}


def test_every_dataset_has_every_bottleneck():
    names = set(TOKENIZER_PRESETS)
    for dataset in ("digits", "shapes32", "faces32", "mixture"):
        for kind in ("ae", "kl", "vq", "fsq", "lfq"):
            assert f"{dataset}-{kind}" in names


# every dataset and every bottleneck trains once (a dataset's presets share their architecture
# and budget; a bottleneck's its settings): the cheap mixture toy takes the fifth kind
TRAINED = ["digits-vq", "shapes32-fsq", "faces32-lfq", "mixture-kl", "mixture-ae", "digits-dvae",
           "digits-vqvae2"]


def test_the_trained_presets_cover_every_dataset_and_bottleneck():
    assert {name.split("-")[0] for name in TRAINED} == {n.split("-")[0] for n in TOKENIZER_PRESETS}
    assert {name.split("-")[1] for name in TRAINED} == {n.split("-")[1] for n in TOKENIZER_PRESETS}


def small_data(cfg: TokenizerRunConfig, name: str) -> TokenizerRunConfig:
    if name.startswith("shapes32"):  # the preset's architecture on fewer drawn images
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data,
                                                               spec="shapes:size=32,n=800"))
    return cfg


@pytest.mark.parametrize("name", sorted(TOKENIZER_PRESETS))
def test_every_preset_builds_on_its_data_and_has_a_finite_gradient(name):
    """Each preset's objective on four items of its data: a finite loss in every phase, a
    gradient on every trained parameter, a reconstruction of the input's shape."""
    cfg = small_data(TOKENIZER_PRESETS[name], name)
    data = load_dataset(cfg.data.spec, "train")
    cfg = build_tokenizer(cfg, data.shape)
    objective = build_objective(cfg, data)
    batch, handed = first_batch(data, 4), {}
    for phase in objective.phases:  # in order, each getting what the earlier ones handed on
        loss, _, handed[phase] = objective(phase, batch, 0, handed)
        loss.backward()
        assert torch.isfinite(loss), (name, phase)
        grads = [p.grad for p in objective.phase_parameters(phase) if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), (name, phase)
    assert objective.tokenizer(batch.x).x_hat.shape == batch.x.shape


@pytest.mark.slow
@pytest.mark.parametrize("name", TRAINED)
def test_short_run_beats_the_mean_image(tmp_path, name):
    preset = TOKENIZER_PRESETS[name]
    small = "32" in name  # 32x32 presets: fewer, smaller steps keep the suite quick (at 80
    # steps shapes32-fsq and faces32-lfq reach 0.38 and 0.31 of the mean image's MSE)
    cfg = replace_train(preset, steps=80 if small else 300, batch_size=16 if small else 32,
                        warmup=20, eval_every=0, checkpoint_every=1000, log_every=100)
    metrics = train_tokenizer(small_data(cfg, name), tmp_path / "run")
    assert metrics["test"]["mse"] < 0.6 * metrics["mean_image_mse"], metrics["test"]
    if "usage" in metrics["test"]:
        assert metrics["test"]["usage"] > 0.05


def test_generator_configs_load():
    from latentlab.generation.config import GeneratorRunConfig

    files = sorted((ROOT / "generators").glob("*.yaml"))
    assert files
    for path in files:
        assert C.load(GeneratorRunConfig, path).train.steps > 0, path
