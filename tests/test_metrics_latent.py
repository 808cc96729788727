"""Latent metrics against analytic answers: Lipschitz ratios of linear maps, nearest neighbours,
cosine histograms and eigenvalue spectra of known vector sets."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.integrate import quad

from latentlab.metrics.latent import (
    cosine_histogram,
    eigenvalue_decay,
    lipschitz,
    nearest_neighbour_accuracy,
)


def linear(w: torch.Tensor):
    return lambda x: x @ w.T


def test_lipschitz_of_a_linear_map_along_its_top_singular_vector_is_its_operator_norm():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(5, 7, generator=g, dtype=torch.float64)
    _, s, vh = torch.linalg.svd(w)
    # points on a line along the top right singular vector: every pair differs along it
    t = torch.randn(50, 1, generator=g, dtype=torch.float64)
    x = torch.randn(1, 7, generator=g, dtype=torch.float64) + t * vh[0]
    out = lipschitz(linear(w), x, pairs=500, generator=g)
    for key in ("mean", "quantile", "max"):
        assert out[key] == pytest.approx(float(s[0]), rel=1e-9), key


def test_lipschitz_of_a_linear_map_is_bounded_by_its_operator_norm():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(5, 7, generator=g, dtype=torch.float64)
    norm = float(torch.linalg.matrix_norm(w, 2))
    out = lipschitz(linear(w), torch.randn(300, 7, generator=g, dtype=torch.float64),
                    pairs=3000, generator=g)
    assert out["mean"] <= out["quantile"] <= out["max"] <= norm * (1 + 1e-9)
    assert out["max"] > 0.7 * norm  # some random pair comes close to the top direction
    assert out["pairs"] == 3000


def test_lipschitz_mean_matches_the_analytic_mean_of_a_diagonal_map():
    """Isotropic Gaussian points differ in a uniformly random direction (cos a, sin a), so the
    mean ratio of diag(s1, s2) is (1 / 2 pi) * integral of sqrt(s1^2 cos^2 a + s2^2 sin^2 a)."""
    s1, s2 = 3.0, 0.5
    exact = quad(lambda a: math.sqrt((s1 * math.cos(a)) ** 2 + (s2 * math.sin(a)) ** 2),
                 0, 2 * math.pi)[0] / (2 * math.pi)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4000, 2, generator=g, dtype=torch.float64)
    out = lipschitz(linear(torch.diag(torch.tensor([s1, s2], dtype=torch.float64))), x,
                    pairs=40_000, generator=g)
    assert out["mean"] == pytest.approx(exact, rel=0.01)
    assert out["max"] <= s1 + 1e-9


def test_lipschitz_rms_distances_put_spaces_of_different_size_on_one_scale():
    x = torch.randn(100, 4, generator=torch.Generator().manual_seed(3))
    tile = lambda v: v.repeat(1, 4)  # noqa: E731 - R^4 -> R^16, Euclidean ratio exactly 2
    assert lipschitz(tile, x)["mean"] == pytest.approx(2.0, rel=1e-5)
    assert lipschitz(tile, x, rms=True)["max"] == pytest.approx(1.0, rel=1e-5)


def test_lipschitz_skips_identical_pairs_and_refuses_when_all_are():
    x = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    out = lipschitz(lambda v: 2 * v, x, pairs=200, generator=torch.Generator().manual_seed(0))
    assert out["max"] == pytest.approx(2.0) and 0 < out["pairs"] < 200
    with pytest.raises(ValueError, match="identical"):
        lipschitz(lambda v: v, torch.zeros(5, 3), pairs=10)


def test_nearest_neighbour_accuracy_of_separated_and_of_shuffled_classes():
    g = torch.Generator().manual_seed(4)
    centres = 10 * torch.randn(4, 6, generator=g)
    y_train, y_test = torch.arange(400) % 4, torch.arange(100) % 4
    train = centres[y_train] + torch.randn(400, 6, generator=g)
    test = centres[y_test] + torch.randn(100, 6, generator=g)
    assert nearest_neighbour_accuracy(train, y_train, test, y_test) == 1.0
    shuffled = y_train[torch.randperm(400, generator=g)]
    assert nearest_neighbour_accuracy(train, shuffled, test, y_test) < 0.5  # chance is 0.25


def test_cosine_histogram_of_known_sets():
    same = torch.ones(10, 3)  # all pairs at cosine 1
    counts, edges = cosine_histogram(same, bins=4)
    assert counts.tolist() == [0, 0, 0, 45] and edges.tolist() == [-1, -0.5, 0, 0.5, 1]
    basis = torch.eye(6).reshape(6, 2, 3)  # orthonormal items, flattened per item: cosine 0
    counts, _ = cosine_histogram(basis, bins=5)
    assert counts.tolist() == [0, 0, 15, 0, 0]
    opposite = torch.tensor([[1.0, 0.0], [-2.0, 0.0]])
    assert cosine_histogram(opposite, bins=4)[0].tolist() == [1, 0, 0, 0]


def test_eigenvalue_decay_of_collapsed_and_of_spread_vectors():
    collapsed = eigenvalue_decay(torch.randn(50, 1) * torch.ones(1, 8))  # one direction (+-)
    assert collapsed[0] == pytest.approx(1.0) and collapsed[1:].abs().max() < 1e-9
    spread = eigenvalue_decay(torch.eye(8))
    assert torch.allclose(spread, torch.full((8,), 1 / 8, dtype=torch.float64))
    g = torch.Generator().manual_seed(5)
    values = eigenvalue_decay(torch.randn(30, 100, generator=g))  # wide: via the 30x30 Gram
    assert values.shape == (30,) and values.sum() == pytest.approx(1.0)
    assert (values[:-1] >= values[1:]).all()
