"""Fréchet distance (raw and FD-infinity), KID, precision/recall, density/coverage and class
accuracy against known answers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from latentlab.data import load_dataset
from latentlab.evaluation.features import feature_network
from latentlab.evaluation.views import inception_fid, load_extractor
from latentlab.metrics.generation import (
    class_accuracy,
    density_coverage,
    fd_infinity,
    frechet_distance,
    generation_metrics,
    kernel_inception_distance,
    precision_recall,
    view_metrics,
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


def _gaussian_pair(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Two Gaussian sets in 32 dimensions and their analytic Fréchet distance:
    N(0, I) and N(mu, diag(s^2)) are |mu|^2 + sum (1 - s)^2 apart."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.full((32,), 0.1, dtype=torch.float64)
    s = torch.linspace(0.8, 1.2, 32, dtype=torch.float64)
    a = torch.randn(n, 32, generator=g, dtype=torch.float64)
    b = mu + s * torch.randn(n, 32, generator=g, dtype=torch.float64)
    return a, b, float(mu.square().sum() + (1 - s).square().sum())


def test_fd_infinity_removes_the_small_sample_bias_of_the_raw_distance():
    raw, unbiased, truth = [], [], None
    for seed in range(6):
        a, b, truth = _gaussian_pair(400, seed)
        raw.append(frechet_distance(a, b))
        unbiased.append(fd_infinity(a, b, seed=seed))
    raw_bias = sum(raw) / len(raw) - truth
    inf_bias = sum(unbiased) / len(unbiased) - truth
    assert raw_bias > 0.5 * truth  # at 400 items in 32-d the raw FD is measurably biased up
    assert abs(inf_bias) < raw_bias / 5, (raw_bias, inf_bias)
    # more items: the raw FD falls towards the truth, FD-infinity stays on it
    a, b, _ = _gaussian_pair(4000, 99)
    assert abs(fd_infinity(a, b) - truth) < 0.1 * truth
    assert frechet_distance(a, b) < sum(raw) / len(raw)


def test_the_floor_of_two_draws_of_one_distribution_is_its_bias():
    a, b, _ = _gaussian_pair(800, 3)
    c, _, _ = _gaussian_pair(800, 4)  # a second draw of a's distribution
    found = view_metrics(torch.cat([a, c]), b, seed=0)
    # raw distance at 800 items against 800: a's halves differ by the bias alone
    expected_bias = frechet_distance(a, c)
    assert found["fd_floor"] == pytest.approx(expected_bias, rel=0.3)
    assert found["fd_floor"] > 0.1 and abs(found["fd_inf_floor"]) < found["fd_floor"] / 4
    assert found["fd"] > found["fd_floor"] and found["fd_inf"] > 3 * abs(found["fd_inf_floor"])


def test_density_and_coverage_against_itself_another_draw_and_a_disjoint_set(features):
    k = 5
    density, coverage = density_coverage(features, features, k)
    # every point lies in its own ball and in k others' in total: density (k + 1) / k exactly
    assert density == pytest.approx((k + 1) / k) and coverage == 1.0
    a, b, _ = _gaussian_pair(1000, 0)
    c = torch.randn(1000, 32, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    density, coverage = density_coverage(a, c, k)  # two draws of one distribution
    assert density == pytest.approx(1.0, abs=0.15) and coverage > 0.9  # E = 1 - 2^-k
    assert density_coverage(features, features + 1e3, k) == (0.0, 0.0)


def test_kid_is_zero_within_noise_for_one_distribution_and_positive_for_two(features):
    a, b = features[:300], features[300:]
    same, same_std = kernel_inception_distance(a, b, subsets=20, subset_size=200)
    shifted, _ = kernel_inception_distance(a, b + 3.0, subsets=20, subset_size=200)
    assert abs(same) < 3 * same_std + 1e-9
    assert shifted > 10 * (abs(same) + same_std)
    assert kernel_inception_distance(a, b, 5, 100, seed=7) == kernel_inception_distance(
        a, b, 5, 100, seed=7)
    # one subset of everything is torchmetrics' own estimate
    from torchmetrics.image.kid import poly_mmd

    assert kernel_inception_distance(a, b, 1, 300)[0] == pytest.approx(float(poly_mmd(a, b)),
                                                                       rel=1e-9)


def test_class_accuracy_and_generation_metrics_on_real_digits(feature_cache):
    net = feature_network("digits", feature_cache)
    test = load_dataset("digits", "test")
    batch = test.__getitems__(list(range(len(test))))
    assert class_accuracy(net, batch.x, batch.y) == pytest.approx(net.accuracy)
    assert class_accuracy(net, batch.x, (batch.y + 1) % 10) < 0.05
    half = len(test) // 2
    real, fake = batch.x[:half], batch.x[half:]
    views = {"classifier": net.embed, "pixels": lambda x: x.flatten(1)}
    good = generation_metrics(views, real, fake, batch.y[half:], net)
    noise = torch.rand(fake.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    bad = generation_metrics(views, real, noise, batch.y[half:], net)
    per_view = ("fd", "fd_floor", "fd_inf", "fd_inf_floor", "kid", "kid_std", "precision",
                "recall", "density", "coverage")
    assert set(good) == {f"{m}/{v}" for m in per_view for v in views} | {"class_accuracy"}
    for v in views:
        assert good[f"fd/{v}"] * 2 < bad[f"fd/{v}"] and good[f"kid/{v}"] < bad[f"kid/{v}"]
        assert good[f"fd_inf/{v}"] * 5 < bad[f"fd_inf/{v}"]
        assert bad[f"coverage/{v}"] < good[f"coverage/{v}"] / 2
    assert good["fd_floor/pixels"] == bad["fd_floor/pixels"]  # the floor is the real set's
    # 180 real points make wide k-NN balls, so noise still lands in some (docs/metrics.md)
    assert good["precision/classifier"] > 0.8
    assert bad["precision/classifier"] < good["precision/classifier"] / 2
    assert good["class_accuracy"] > 0.95 and bad["class_accuracy"] < 0.3
    assert "class_accuracy" not in generation_metrics(views, real, fake,
                                                      torch.full((half,), -1), net)


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
