"""Bottleneck configuration: the registry, validation naming the field, YAML and --help."""

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


@pytest.mark.parametrize("kind", list(BOTTLENECKS))
def test_build_gives_the_registered_class(kind):
    cfg = BottleneckConfig(kind=kind, fsq=FSQConfig(levels=(5, 5, 5)))
    bottleneck = build_bottleneck(cfg, 3)
    assert type(bottleneck) is BOTTLENECKS[kind]
    assert bottleneck.channels == 3
    assert bottleneck.in_channels == (6 if kind == "kl" else 3)
    assert bottleneck.discrete == (kind in ("vq", "lfq", "fsq"))
    assert bottleneck.cfg is getattr(cfg, kind)


@pytest.mark.parametrize("make, message", [
    (lambda: VQConfig(codebook_size=0), "codebook_size: must be >= 1, got 0"),
    (lambda: VQConfig(decay=1.0), "decay: "),
    (lambda: FSQConfig(levels=(1, 5)), "levels: every level must be >= 2"),
    (lambda: build_bottleneck(BottleneckConfig(kind="fsq", fsq=FSQConfig(levels=(8, 5))), 3),
     "levels: 2 levels"),
    (lambda: BottleneckConfig(kind="pq"), "kind: "),
])
def test_errors_name_the_field(make, message):
    with pytest.raises(ValueError) as err:
        make()
    assert str(err.value).startswith(message)


def test_yaml_values_are_checked_and_named_with_their_section():
    with pytest.raises(ConfigError, match="vq.codebook_size: must be >= 1, got 0"):
        C.from_dict(BottleneckConfig, {"kind": "vq", "vq": {"codebook_size": 0}})
    with pytest.raises(ConfigError, match="update must be 'ema' | 'loss'"):
        C.from_dict(BottleneckConfig, {"vq": {"update": "adam"}})
    cfg = C.from_dict(BottleneckConfig, {"kind": "fsq", "fsq": {"levels": [8, 5, 5]}})
    assert cfg.fsq.levels == (8, 5, 5)  # a YAML list becomes the typed tuple


def test_every_field_is_documented_and_the_yaml_round_trips(tmp_path):
    for cls in [BottleneckConfig, *(type(getattr(BottleneckConfig(), k)) for k in BOTTLENECKS)]:
        undocumented = {f.name for f in dataclasses.fields(cls)} - set(C.field_docs(cls))
        assert not undocumented, (cls.__name__, undocumented)
    cfg = BottleneckConfig(kind="vq", vq=VQConfig(codebook_size=64, cosine=True))
    path = tmp_path / "b.yaml"
    path.write_text(C.dump_yaml(cfg))
    assert C.load(BottleneckConfig, path) == cfg
