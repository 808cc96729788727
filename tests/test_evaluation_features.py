"""The domain feature network: accuracy on real digits, caching, determinism, shapes."""

from __future__ import annotations

import json

import pytest
import torch

from latentlab.data import ArrayDataset, load_dataset
from latentlab.evaluation.features import (
    NAME,
    FeatureNet,
    FeatureNetConfig,
    cache_root,
    feature_network,
    flip_task,
    train_feature_net,
)

# a budget of two steps: enough to exercise caching and determinism without training
CHEAP = FeatureNetConfig(width=4, features=8, epochs=0, min_steps=2, max_steps=2)


@pytest.fixture(scope="module")
def feature_cache(tmp_path_factory):
    """The session-wide cache (shared with the other metric tests through the base temporary
    directory), so the digits network trains once per session."""
    return tmp_path_factory.getbasetemp() / "feature-cache"


@pytest.fixture(scope="module")
def digits_net(feature_cache):
    return feature_network("digits", feature_cache)


def test_digits_feature_network_reaches_95_percent_held_out(digits_net, feature_cache):
    assert digits_net.task == "classes" and not digits_net.training
    assert digits_net.accuracy >= 0.95
    [record] = list((feature_cache / "features").glob(f"*/{NAME}.json"))
    stored = json.loads(record.read_text())
    assert stored["accuracy"] == digits_net.accuracy and stored["dataset"] == "digits"
    assert (record.parent / f"{NAME}.safetensors").is_file()


def test_a_cached_network_is_loaded_not_retrained(digits_net, feature_cache):
    again = feature_network("digits", feature_cache)
    x = load_dataset("digits", "test").__getitems__(list(range(32))).x
    assert torch.equal(again.embed(x), digits_net.embed(x))
    assert again.accuracy == digits_net.accuracy


def test_training_is_deterministic_and_leaves_the_global_rng_alone():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    state = torch.random.get_rng_state()
    a, b = train_feature_net(train, test, CHEAP), train_feature_net(train, test, CHEAP)
    assert torch.equal(torch.random.get_rng_state(), state)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_a_corrupt_or_differently_configured_cache_entry_is_retrained(tmp_path):
    net = feature_network("digits", tmp_path, CHEAP)
    [weights] = list(tmp_path.glob(f"features/*/{NAME}.safetensors"))
    weights.write_bytes(b"garbage")
    again = feature_network("digits", tmp_path, CHEAP)
    assert again.accuracy == net.accuracy and weights.stat().st_size > 100
    other = FeatureNetConfig(width=4, features=8, epochs=0, min_steps=3, max_steps=3)
    feature_network("digits", tmp_path, other)
    record = json.loads(weights.with_name(f"{NAME}.json").read_text())
    assert record["config"]["min_steps"] == 3


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LATENTLAB_CACHE", str(tmp_path))
    assert cache_root() == tmp_path and cache_root("x") == type(tmp_path)("x")


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 12, 20), (10,)])
def test_feature_net_takes_images_of_any_size_and_vectors(shape):
    net = FeatureNet(shape, 7, FeatureNetConfig(width=8, features=16))
    x = torch.randn(3, *shape)
    assert net.features(x).shape == (3, 16) and net(x).shape == (3, 7)
    with pytest.raises(ValueError, match="at least 8x8"):
        FeatureNet((1, 4, 4), 2, FeatureNetConfig())


def test_vector_data_trains_the_mlp_variant():
    spec = "mixture:std=0.05,n=800"
    cfg = FeatureNetConfig(width=16, features=32, epochs=0, min_steps=150, max_steps=150)
    net = train_feature_net(load_dataset(spec, "train"), load_dataset(spec, "test"), cfg)
    assert net.accuracy > 0.95  # eight well separated clusters


def test_unlabelled_images_train_on_the_flip_task():
    x = torch.rand(64, 1, 8, 8)
    data = ArrayDataset(x * 2 - 1, None, [], "noise[train]")
    net = train_feature_net(data, data, CHEAP)
    assert net.task == "flips" and net.num_classes == 4
    flipped, target = flip_task(x)
    assert torch.equal(flipped[1], x[1].flip(-1)) and torch.equal(flipped[2], x[2].flip(-2))
    assert torch.equal(flipped[3], x[3].flip(-1).flip(-2)) and target.tolist()[:4] == [0, 1, 2, 3]
