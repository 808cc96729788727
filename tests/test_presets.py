"""Every tokenizer preset: its YAML file matches it, and a short run beats the mean image."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from latentlab import config as C
from latentlab.recipes.presets import TOKENIZER_PRESETS, preset_yaml
from latentlab.recipes.train import TokenizerRunConfig, train_tokenizer

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


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TOKENIZER_PRESETS))
def test_short_run_beats_the_mean_image(tmp_path, name):
    preset = TOKENIZER_PRESETS[name]
    small = "32" in name  # 32x32 presets: fewer, smaller steps keep the suite quick
    cfg = replace_train(preset, steps=120 if small else 300, batch_size=16 if small else 32,
                        warmup=20, eval_every=0, checkpoint_every=1000, log_every=100)
    if name.startswith("shapes32"):  # the preset's architecture on fewer drawn images
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data,
                                                               spec="shapes:size=32,n=800"))
    metrics = train_tokenizer(cfg, tmp_path / "run")
    assert metrics["test"]["mse"] < 0.6 * metrics["mean_image_mse"], metrics["test"]
    if "usage" in metrics["test"]:
        assert metrics["test"]["usage"] > 0.05


def test_generator_configs_load():
    from latentlab.generation.config import GeneratorRunConfig

    files = sorted((ROOT / "generators").glob("*.yaml"))
    assert files
    for path in files:
        assert C.load(GeneratorRunConfig, path).train.steps > 0, path
