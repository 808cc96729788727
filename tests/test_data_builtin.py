"""The built-in datasets: shapes, ranges, dtypes, labels, fixed splits and their own invariants."""

import math

import numpy as np
import pytest
import torch

from latentlab.data import load_dataset
from latentlab.data.builtin import mixture_centres, mixture_embedding
from latentlab.data.shapes import PALETTE, SHAPES, describe_position


def _everything(data):
    batch = data.__getitems__(list(range(len(data))))
    return batch.x, batch.y


def _check_images(data, shape, size):
    x, y = _everything(data)
    assert data.shape == shape and x.shape == (size, *shape)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() >= -1 and x.max() <= 1
    assert x.min() < -0.9 and x.max() > 0.9  # the whole range is used, not a sliver of it
    return x, y


def test_digits_split_is_stratified_fixed_and_in_range():
    train, test = load_dataset("digits"), load_dataset("digits", "test")
    _, y_train = _check_images(train, (1, 8, 8), 1437)
    _, y_test = _check_images(test, (1, 8, 8), 360)
    assert train.class_names == [str(k) for k in range(10)]
    counts = np.bincount(y_train, minlength=10) + np.bincount(y_test, minlength=10)
    share = np.bincount(y_test, minlength=10) / counts
    assert np.allclose(share, 0.2, atol=0.01)  # every class split 80/20
    again = load_dataset("digits", "test")
    assert torch.equal(again.data, test.data) and torch.equal(again.labels, test.labels)


def test_mixture_sizes_dtype_and_labels():
    train = load_dataset("mixture:k=5,d=7,n=400,seed=3")
    test = load_dataset("mixture:k=5,d=7,n=400,seed=3", "test")
    x, y = _everything(train)
    assert train.shape == (7,) and x.shape == (400, 7) and x.dtype == torch.float32
    assert len(test) == 100 and train.class_names == ["0", "1", "2", "3", "4"]
    assert set(y.tolist()) == set(range(5))
    assert not torch.equal(test.data[:50], train.data[:50])  # different draws


def test_mixture_embedding_is_orthonormal_and_shared_by_the_splits():
    e = mixture_embedding(10, seed=0)
    assert e.shape == (10, 2)
    np.testing.assert_allclose(e.T @ e, np.eye(2), atol=1e-12)
    x = np.concatenate([load_dataset("mixture:n=200").data.double().numpy(),
                        load_dataset("mixture:n=200", "test").data.double().numpy()])
    lifted = x @ e @ e.T  # projecting onto the embedded plane changes nothing
    np.testing.assert_allclose(lifted, x, atol=1e-5)
    assert not np.allclose(mixture_embedding(10, seed=1), e)


def test_mixture_class_means_sit_on_the_embedded_unit_circle():
    k, n, std = 8, 8000, 0.5
    data = load_dataset(f"mixture:k={k},d=10,std={std},n={n},seed=0")
    x, y = data.data.double().numpy(), data.labels.numpy()
    means = np.stack([x[y == c].mean(axis=0) for c in range(k)])  # (K, D)
    # each mean averages ~1000 draws of std 0.5: about 0.016 off per axis
    np.testing.assert_allclose(means, mixture_centres(k, 10, seed=0), atol=0.08)
    # distances between centres are those of the k-th roots of unity: the map is an isometry
    gap = np.linalg.norm(means[:, None] - means[None], axis=-1)
    steps = np.abs(np.arange(k)[:, None] - np.arange(k)[None])
    np.testing.assert_allclose(gap, 2 * np.sin(math.pi * steps / k), atol=0.1)
    spread = np.linalg.norm(x - mixture_centres(k, 10, 0)[y], axis=1)
    assert abs(np.sqrt((spread**2).mean() / 2) - std) < 0.02  # per-axis std in the plane


def test_shapes_images_labels_and_captions():
    train = load_dataset("shapes:size=32,n=120,seed=1")
    x, y = _check_images(train, (3, 32, 32), 120)
    assert train.data.dtype == torch.uint8  # kept compact in memory
    assert train.class_names == SHAPES and set(y.tolist()) == {0, 1, 2}
    assert len(load_dataset("shapes:size=32,n=120,seed=1", "test")) == 30
    for i in range(len(train)):
        words = train.caption(i).split()
        assert words[0] == "a" and words[2] == SHAPES[int(y[i])]
        assert words[1] in PALETTE and " at the " in train.caption(i)


def test_shapes_are_a_pure_function_of_seed_split_and_index():
    a = load_dataset("shapes:size=16,n=10,seed=4")
    b = load_dataset("shapes:size=16,n=20,seed=4")
    assert torch.equal(a.data, b.data[:10]) and a.captions == b.captions[:10]
    assert not torch.equal(a.data, load_dataset("shapes:size=16,n=10,seed=5").data)
    assert not torch.equal(a.data[:2], load_dataset("shapes:size=16,n=10,seed=4", "test").data[:2])


def _fill_ratio(image: np.ndarray) -> float:
    """Lit pixels over the area of their bounding box: square 1, circle pi/4, triangle 1/2."""
    lit = image.max(axis=0) > 127  # (H, W)
    rows, cols = np.nonzero(lit)
    return lit.sum() / ((np.ptp(rows) + 1) * (np.ptp(cols) + 1))


def test_shapes_draw_the_shape_and_colour_the_caption_names():
    data = load_dataset("shapes:size=64,n=200,seed=0")
    colours = set()
    for i in range(len(data)):
        image = data.data[i].numpy()  # (3, S, S) uint8
        ratio = _fill_ratio(image)
        expected = {"square": (0.9, 1.01), "circle": (0.7, 0.87), "triangle": (0.4, 0.62)}
        low, high = expected[SHAPES[int(data.labels[i])]]
        assert low < ratio < high, (i, data.caption(i), ratio)
        pixels, counts = np.unique(image.reshape(3, -1).T, axis=0, return_counts=True)
        lit = pixels.max(axis=1) > 0
        modal = tuple(pixels[lit][np.argmax(counts[lit])])  # the shape's interior colour
        colour = data.caption(i).split()[1]
        assert modal == PALETTE[colour], (i, data.caption(i), modal)
        colours.add(colour)
    assert colours == set(PALETTE)


def test_positions_on_the_three_by_three_grid():
    assert describe_position(1, 1, 30) == "top left"
    assert describe_position(15, 2, 30) == "top"
    assert describe_position(29.9, 15, 30) == "right"
    assert describe_position(15, 15, 30) == "center"
    assert describe_position(2, 29.9, 30) == "bottom left"
    captions = load_dataset("shapes:size=32,n=200").captions
    assert len({c.split(" at the ")[1] for c in captions}) == 9


@pytest.mark.parametrize("size", [32, 25])
def test_faces_are_grey_balanced_and_fixed(size):
    train, test = load_dataset(f"faces:size={size}"), load_dataset(f"faces:size={size}", "test")
    _, y = _check_images(train, (1, size, size), 160)
    _, y_test = _check_images(test, (1, size, size), 40)
    assert train.class_names == ["non-face", "face"]
    assert np.bincount(y).tolist() == [80, 80] and np.bincount(y_test).tolist() == [20, 20]


def test_faces_at_native_size_are_the_skimage_pixels_with_faces_first():
    from skimage.data import lfw_subset

    original = torch.as_tensor(lfw_subset(), dtype=torch.float32) * 2 - 1  # (200, 25, 25)
    data = load_dataset("faces:size=25", "test")
    for x, y in zip(data.data, data.labels, strict=True):
        match = torch.nonzero((original - x[0]).abs().flatten(1).amax(1) < 1e-6)
        assert len(match) == 1
        assert int(y) == int(match[0, 0] < 100)  # the first 100 are the faces
