"""Run directories written before tagged-union configs (main of 2026-12-02) keep loading.

tests/data/legacy-2026-12/ holds config files exactly as that version wrote them: two tokenizer
runs (digits-vq; digits-kl with recipe coupled+dae), its tokenizer.yaml, and three generator runs
(ar over the vq tokens, a gan, and flow on the mixture with `network: auto`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from latentlab import config as C
from latentlab.generation.config import FlowSettings, GeneratorRunConfig
from latentlab.generators.autoregressive import ARConfig
from latentlab.generators.denoisers.mlp import MLPDenoiserConfig
from latentlab.generators.gan import GANConfig
from latentlab.recipes.config import CoupledConfig, DAEConfig
from latentlab.recipes.presets import TOKENIZER_PRESETS
from latentlab.recipes.train import TokenizerRunConfig
from latentlab.tokenizers.bottlenecks import KLConfig
from latentlab.tokenizers.tokenizer import CONFIG, Tokenizer

LEGACY = Path(__file__).parent / "data" / "legacy-2026-12"


def test_tokenizer_runs_load_with_only_what_acts():
    vq = C.load(TokenizerRunConfig, LEGACY / "tokvq.yaml")
    assert vq.model == TOKENIZER_PRESETS["digits-vq"].model  # arch, bottleneck: as they were
    assert vq.train.steps == 2 and vq.dae is None and vq.coupled is None
    coupled = C.load(TokenizerRunConfig, LEGACY / "tokcoupled.yaml")
    assert coupled.recipe == "coupled+dae" and coupled.model.bottleneck == KLConfig()
    assert coupled.dae == DAEConfig()
    assert coupled.coupled.big_parameters == 100000 and coupled.coupled.heldout == 8
    assert coupled.coupled == CoupledConfig(start=1, ramp=1, fit_every=1, heldout=8,
                                            big_parameters=100000)
    assert coupled.loss.discriminator is None  # gan off: no discriminator section
    # and they dump in the new layout, which reads back the same
    for cfg in (vq, coupled):
        text = C.dump_yaml(cfg)
        assert "identity:" not in text and "in_channels" not in text
        assert C.from_dict(TokenizerRunConfig, yaml.safe_load(text)) == cfg


def test_generator_runs_load_their_network():
    ar = C.load(GeneratorRunConfig, LEGACY / "genar.yaml").generator
    assert ar.family == "ar" and ar.network == ARConfig(width=128, depth=4, heads=4)
    assert ar.process is None
    gan = C.load(GeneratorRunConfig, LEGACY / "gendit.yaml").generator
    assert gan.family == "gan" and gan.network == GANConfig(noise_dim=64, width=128)
    flow = C.load(GeneratorRunConfig, LEGACY / "genmix.yaml").generator
    # `network: auto` with the mlp section set: the mlp it picked on vectors
    assert flow.network == MLPDenoiserConfig(width=128) and flow.process == FlowSettings()


def test_a_legacy_tokenizer_folder_loads_with_its_channels(tmp_path):
    torch.manual_seed(0)
    model = Tokenizer(TOKENIZER_PRESETS["digits-vq"].model, 1).eval()
    model.save(tmp_path)
    (tmp_path / CONFIG).write_text((LEGACY / "tokvq-tokenizer.yaml").read_text())
    loaded = Tokenizer.load(tmp_path)
    assert loaded.in_channels == 1 and loaded.cfg == model.cfg
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    torch.testing.assert_close(loaded(x).x_hat, model(x).x_hat, rtol=0, atol=0)
