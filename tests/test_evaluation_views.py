"""The views: pixels (with PCA for large images), the self-supervised encoder, and the set of
views each kind of data gets."""

from __future__ import annotations

import math

import pytest
import torch

from latentlab.data import ArrayDataset, load_dataset
from latentlab.evaluation.ssl import SSLConfig, SSLNet, nt_xent, ssl_network, train_ssl_net
from latentlab.evaluation.views import PixelView, dataset_views
from latentlab.metrics.generation import frechet_distance, view_metrics


@pytest.fixture(scope="module")
def feature_cache(tmp_path_factory):
    """The session-wide network cache shared with the other metric tests."""
    return tmp_path_factory.getbasetemp() / "feature-cache"


def _all(spec: str, split: str) -> torch.Tensor:
    data = load_dataset(spec, split)
    return data.__getitems__(list(range(len(data)))).x.float()


def test_pixel_view_keeps_small_items_and_projects_large_ones_on_principal_components():
    g = torch.Generator().manual_seed(0)
    small = torch.randn(50, 1, 8, 8, generator=g)
    assert torch.equal(PixelView(small)(small), small.flatten(1).double())
    # 3x16x16 = 768 values with all variance in 5 directions: 64 components keep every distance
    basis = torch.linalg.qr(torch.randn(768, 5, generator=g, dtype=torch.float64))[0]
    items = (torch.randn(300, 5, generator=g, dtype=torch.float64) @ basis.T).reshape(
        300, 3, 16, 16)
    view = PixelView(items)
    projected = view(items)
    assert projected.shape == (300, 64)
    assert torch.allclose(torch.cdist(projected, projected),
                          torch.cdist(items.flatten(1), items.flatten(1)), atol=1e-6)


def test_ssl_loss_is_low_for_matching_pairs_and_high_for_shuffled_ones():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(64, 16, generator=g)
    matched = nt_xent(a, a + 0.01 * torch.randn(a.shape, generator=g), 0.2)
    shuffled = nt_xent(a, a[torch.randperm(64, generator=g)], 0.2)
    # chance level is log(2B - 1): the partner is one of 127 candidates
    assert matched < 1.5 and shuffled > 0.8 * math.log(127)


def test_ssl_net_has_another_architecture_and_seed_than_the_classifier():
    cfg = SSLConfig()
    net = SSLNet((1, 8, 8), cfg)
    assert cfg.seed != 0  # the classifier's seed
    strided = [m for m in net.body if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == 2 and net(torch.zeros(3, 1, 8, 8)).shape == (3, cfg.features)
    with pytest.raises(ValueError, match="at least 8x8"):
        SSLNet((1, 4, 4), cfg)


def test_ssl_view_separates_real_digits_from_pixel_shuffled_digits(feature_cache):
    net = ssl_network("digits", feature_cache)
    assert net.knn_accuracy > 0.9  # learnt without labels, the features still sort digits
    train, test = _all("digits", "train"), _all("digits", "test")
    g = torch.Generator().manual_seed(0)
    flat = test.flatten(1)
    shuffled = torch.stack([row[torch.randperm(64, generator=g)] for row in flat])
    shuffled = shuffled.reshape(test.shape)  # each image's own pixels, in a random order
    real = view_metrics(net.embed(train).double(), net.embed(test).double())
    fake = view_metrics(net.embed(train).double(), net.embed(shuffled).double())
    assert fake["fd_inf"] > 20 * max(abs(fake["fd_inf_floor"]), real["fd_inf"], 1e-3)
    assert fake["fd"] > 5 * fake["fd_floor"] and fake["coverage"] < real["coverage"] / 3


def test_ssl_training_is_deterministic_and_leaves_the_global_rng_alone():
    data = ArrayDataset(torch.rand(64, 1, 8, 8) * 2 - 1, None, [], name="rand")
    cfg = SSLConfig(min_steps=3, max_steps=3, batch_size=16)
    state = torch.get_rng_state()
    a, b = train_ssl_net(data, data, cfg), train_ssl_net(data, data, cfg)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                 b.state_dict().values(), strict=True))


def test_images_get_four_views_vectors_three(feature_cache):
    views, judges = dataset_views("digits", _all("digits", "train"), feature_cache)
    assert list(views) == ["pixels", "classifier", "probabilities", "ssl"]
    assert set(judges) == {"feature_net_accuracy", "ssl_retrieval", "ssl_knn_accuracy"}
    test = _all("digits", "test")
    probs = views["probabilities"](test)
    assert probs.shape == (360, 10) and torch.allclose(probs.sum(1), torch.ones(360,
                                                                                dtype=probs.dtype))
    views, judges = dataset_views("mixture", _all("mixture", "train"), feature_cache)
    assert list(views) == ["pixels", "classifier", "probabilities"]
    assert set(judges) == {"feature_net_accuracy"}
    x = _all("mixture", "test")
    assert frechet_distance(views["pixels"](x), x.double()) == pytest.approx(0, abs=1e-9)
