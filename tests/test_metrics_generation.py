"""Fréchet distance, KID, precision/recall and class accuracy against known answers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from latentlab.data import load_dataset
from latentlab.metrics.features import feature_network
from latentlab.metrics.generation import (
    class_accuracy,
    frechet_distance,
    generation_metrics,
    inception_fid,
    kernel_inception_distance,
    load_extractor,
    precision_recall,
)


@pytest.fixture(scope="module")
def features():
    g = torch.Generator().manual_seed(0)
    mixing = torch.randn(16, 16, generator=g, dtype=torch.float64)
    return torch.randn(600, 16, generator=g, dtype=torch.float64) @ mixing


def test_frechet_distance_of_a_set_to_itself_is_zero(features):
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_grows_with_the_perturbation(features):
    noise = torch.randn(features.shape, generator=torch.Generator().manual_seed(1),
                        dtype=torch.float64)
    distances = [frechet_distance(features, features + s * noise)
                 for s in (0.0, 0.1, 0.3, 1.0, 3.0)]
    assert distances[0] == pytest.approx(0.0, abs=1e-8)
    assert all(a < b for a, b in zip(distances, distances[1:], strict=False)), distances


def test_frechet_distance_of_a_shift_is_its_squared_length(features):
    shift = torch.linspace(-1, 1, 16, dtype=torch.float64)
    assert frechet_distance(features, features + shift) == pytest.approx(
        float(shift.square().sum()), rel=1e-9)


def test_frechet_distance_agrees_with_torchmetrics(features):
    from torchmetrics.image.fid import _compute_fid

    other = features[:300] * 1.5 + 0.2
    stats = [(x.mean(0), torch.cov(x.T)) for x in (features, other)]
    reference = float(_compute_fid(*stats[0], *stats[1]))
    assert frechet_distance(features, other) == pytest.approx(reference, rel=1e-6)


def test_precision_recall_of_a_set_against_itself_and_a_disjoint_set(features):
    assert precision_recall(features, features) == (1.0, 1.0)
    assert precision_recall(features, features + 1e3) == (0.0, 0.0)


def test_precision_and_recall_separate_mode_dropping_from_junk(features):
    far = features[:300] + 1e3
    # half of the fake set is junk: precision halves, every real point is still covered
    precision, recall = precision_recall(features, torch.cat([features[:300], far]))
    assert precision == pytest.approx(0.5) and recall > 0.9
    # the fake set covers half of the real one: recall falls, precision stays
    half = features[features[:, 0] > features[:, 0].median()]
    precision, recall = precision_recall(features, half)
    assert precision == 1.0 and recall < 0.75


def test_kid_is_zero_within_noise_for_one_distribution_and_positive_for_two(features):
    a, b = features[:300], features[300:]
    same, same_std = kernel_inception_distance(a, b, subsets=20, subset_size=200)
    shifted, _ = kernel_inception_distance(a, b + 3.0, subsets=20, subset_size=200)
    assert abs(same) < 3 * same_std + 1e-9
    assert shifted > 10 * (abs(same) + same_std)
    assert kernel_inception_distance(a, b, 5, 100, seed=7) == kernel_inception_distance(
        a, b, 5, 100, seed=7)


def test_class_accuracy_and_generation_metrics_on_real_digits(feature_cache):
    net = feature_network("digits", feature_cache)
    test = load_dataset("digits", "test")
    batch = test.__getitems__(list(range(len(test))))
    assert class_accuracy(net, batch.x, batch.y) == pytest.approx(net.accuracy)
    assert class_accuracy(net, batch.x, (batch.y + 1) % 10) < 0.05
    half = len(test) // 2
    real, fake = batch.x[:half], batch.x[half:]
    good = generation_metrics(net, real, fake, batch.y[half:])
    noise = torch.rand(fake.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    bad = generation_metrics(net, real, noise, batch.y[half:])
    assert set(good) == {"fd", "kid", "kid_std", "precision", "recall", "class_accuracy"}
    assert good["fd"] * 10 < bad["fd"] and good["kid"] < bad["kid"]
    # 180 real points make wide k-NN balls, so noise still lands in some (docs/metrics.md)
    assert good["precision"] > 0.8 and bad["precision"] < good["precision"] / 2
    assert good["class_accuracy"] > 0.95 and bad["class_accuracy"] < 0.3
    assert "class_accuracy" not in generation_metrics(net, real, fake, torch.full((half,), -1))


def test_inception_fid_uses_the_exported_extractor_given(tmp_path):
    torch.manual_seed(0)
    extractor = nn.Sequential(nn.Conv2d(3, 8, 5, stride=4), nn.SiLU(), nn.AdaptiveAvgPool2d(2),
                              nn.Flatten()).eval()
    batch = torch.export.Dim("batch")
    program = torch.export.export(extractor, (torch.rand(2, 3, 299, 299),),
                                  dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp_path / "extractor.pt2")
    g = torch.Generator().manual_seed(1)
    real = torch.rand(40, 1, 8, 8, generator=g) * 2 - 1
    fake = (real + 0.5 * torch.randn(real.shape, generator=g)).clamp(-1, 1)
    assert inception_fid(real, real, tmp_path / "extractor.pt2") == pytest.approx(0, abs=1e-8)
    expected = frechet_distance(*[_by_hand(extractor, x) for x in (real, fake)])
    assert inception_fid(real, fake, tmp_path / "extractor.pt2") == pytest.approx(expected,
                                                                                  rel=1e-5)
    (tmp_path / "junk.pt2").write_bytes(b"not a program")
    with pytest.raises(ValueError, match="not a torch.export program"):
        load_extractor(tmp_path / "junk.pt2")


def _by_hand(extractor: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = torch.nn.functional.interpolate(((x + 1) / 2).expand(-1, 3, -1, -1), size=(299, 299),
                                        mode="bilinear", align_corners=False)
    with torch.no_grad():
        return extractor(x).double()


@pytest.fixture
def feature_cache(tmp_path_factory):
    """One feature-network cache for the whole session, shared by every test file through the
    session's base temporary directory: the digits network is trained once."""
    return tmp_path_factory.getbasetemp() / "feature-cache"
