"""Bottleneck configuration: the registry, the tagged union, validation naming the field."""

from __future__ import annotations

import dataclasses

import pytest

from latentlab import config as C
from latentlab.errors import ConfigError
from latentlab.tokenizers.bottlenecks import (
    BOTTLENECKS,
    BottleneckConfig,
    FSQConfig,
    VQConfig,
    build_bottleneck,
)
from latentlab.tokenizers.tokenizer import TokenizerConfig

MEMBERS = {C.kind_of(m): m for m in C.sections(BottleneckConfig)}


def test_the_union_has_one_config_per_registered_kind():
    assert set(MEMBERS) == set(BOTTLENECKS)


@pytest.mark.parametrize("kind", list(BOTTLENECKS))
def test_build_gives_the_registered_class(kind):
    cfg = FSQConfig(levels=(5, 5, 5)) if kind == "fsq" else MEMBERS[kind]()
    channels = 4 if kind == "hvq" else 3  # hvq: two levels of 2
    bottleneck = build_bottleneck(cfg, channels)
    assert type(bottleneck) is BOTTLENECKS[kind]
    assert bottleneck.channels == channels
    # kl reads a mean and a log-variance per channel, gumbel one logit per code, hvq the
    # encoder features both its levels are computed from
    assert bottleneck.in_channels == {"kl": 6, "gumbel": getattr(cfg, "codebook_size", 0),
                                      "hvq": getattr(cfg, "hidden", 0)}.get(kind, 3)
    assert bottleneck.discrete == (kind in ("vq", "lfq", "fsq", "gumbel", "hvq"))
    assert bottleneck.cfg is cfg


@pytest.mark.parametrize("make, message", [
    (lambda: VQConfig(codebook_size=0), "codebook_size: must be >= 1, got 0"),
    (lambda: VQConfig(decay=1.0), "decay: "),
    (lambda: FSQConfig(levels=(1, 5)), "levels: every level must be >= 2"),
    (lambda: build_bottleneck(FSQConfig(levels=(8, 5)), 3), "levels: 2 levels"),
])
def test_errors_name_the_field(make, message):
    with pytest.raises(ValueError) as err:
        make()
    assert str(err.value).startswith(message)


def parse(bottleneck: dict) -> BottleneckConfig:
    return C.from_dict(TokenizerConfig, {"latent_channels": 3, "bottleneck": bottleneck}).bottleneck


def test_yaml_picks_the_member_by_kind_and_names_the_field():
    cfg = parse({"kind": "fsq", "levels": [8, 5, 5]})
    assert cfg == FSQConfig(levels=(8, 5, 5))  # a YAML list becomes the typed tuple
    assert parse({"kind": "vq"}) == VQConfig()  # a kind alone: that member's defaults
    with pytest.raises(ConfigError, match="bottleneck.codebook_size: must be >= 1, got 0"):
        parse({"kind": "vq", "codebook_size": 0})
    with pytest.raises(ConfigError, match="update must be 'ema' | 'loss'"):
        parse({"kind": "vq", "update": "adam"})
    with pytest.raises(ConfigError, match=r"bottleneck.kind must be 'identity' \| 'kl' \| 'vq' "
                                          r"\| 'lfq' \| 'fsq' \| 'gumbel' \| 'hvq', got 'vqq' "
                                          r"\(did you mean vq\?\)"):
        parse({"kind": "vqq"})
    # another kind's setting: named, with the kind it belongs to
    with pytest.raises(ConfigError, match=r"bottleneck.codebook_size: a setting of kind vq, "
                                          r"gumbel or hvq, not "
                                          r"of kind 'kl' \(set bottleneck.kind\)"):
        parse({"kind": "kl", "codebook_size": 8})


def test_every_field_is_documented_and_the_yaml_round_trips(tmp_path):
    for cls in [TokenizerConfig, *MEMBERS.values()]:
        undocumented = {f.name for f in dataclasses.fields(cls)} - set(C.field_docs(cls))
        assert not undocumented, (cls.__name__, undocumented)
    cfg = TokenizerConfig(bottleneck=VQConfig(codebook_size=64, cosine=True))
    path = tmp_path / "b.yaml"
    path.write_text(C.dump_yaml(cfg))
    keys = [line.split(":")[0].strip() for line in path.read_text().splitlines()
            if not line.lstrip().startswith("#")]
    assert "codebook_size" in keys and "levels" not in keys and "weight" not in keys  # vq's only
    assert C.load(TokenizerConfig, path) == cfg
