"""The typed config system: YAML, dotted overrides, validation and documentation."""

from __future__ import annotations

import argparse

import pytest

from latentlab import config as C
from latentlab.commands import options
from latentlab.errors import ConfigError
from latentlab.recipes.train import TokenizerRunConfig


def test_precedence_defaults_yaml_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  steps: 300\n  lr: 1e-2\nmodel:\n  arch:\n    ch_mult: [1, 2, 4]\n")
    cfg = C.load(TokenizerRunConfig, path, {"train.steps": 500})
    assert cfg.train.steps == 500  # override beats file
    assert cfg.train.lr == 0.01  # file beats default
    assert cfg.model.arch.ch_mult == (1, 2, 4)  # lists become typed tuples
    assert cfg.train.batch_size == TokenizerRunConfig().train.batch_size  # default kept


def test_yaml_dump_round_trips_and_is_commented(tmp_path):
    cfg = C.load(TokenizerRunConfig, None, {"train.steps": 7, "model.arch.channels": 16})
    text = C.dump_yaml(cfg)
    assert "# Optimizer steps to train for." in text
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert C.load(TokenizerRunConfig, path) == cfg


@pytest.mark.parametrize("overrides, message", [
    ({"train.stpes": 5}, "unknown field 'train.stpes'"),
    ({"train.steps": "many"}, "train.steps must be int, got 'many'"),
    ({"train.steps": 0}, "train.steps: must be >= 1, got 0"),
    ({"train.precision": "fp16"}, "train.precision must be 'auto' | 'bf16' | 'fp32'"),
    ({"model.arch.ch_mult": [1, 0]}, "model.arch.ch_mult"),
    ({"train.batch_size": 10, "train.accumulate": 3}, "train.batch_size: 10 is not divisible"),
    ({"loss.reconstruction": 3}, "loss.reconstruction must be 'l1' | 'l2', got 3"),
])
def test_bad_values_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=None) as err:
        C.load(TokenizerRunConfig, None, overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        C.load(TokenizerRunConfig, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML at line"):
        C.load(TokenizerRunConfig, bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        C.load(TokenizerRunConfig, scalar)


def test_cli_options_carry_docs_and_types():
    parser = argparse.ArgumentParser()
    options.add_arguments(parser, TokenizerRunConfig)
    help_text = parser.format_help()
    assert "--train.steps" in help_text and "Optimizer steps to train for" in help_text
    args = parser.parse_args(["--train.steps", "12", "--model.arch.ch_mult", "[1,2,2]",
                              "--data.spec", "123", "--train.channels_last", "false"])
    overrides = options.overrides_from(args)
    assert overrides == {"train.steps": 12, "model.arch.ch_mult": [1, 2, 2], "data.spec": "123",
                         "train.channels_last": False}
    cfg = C.load(TokenizerRunConfig, None, overrides)
    assert cfg.data.spec == "123" and cfg.train.channels_last is False
