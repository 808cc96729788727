"""Array files written by the tests: .npz archives, MNIST IDX files, CIFAR-10 binary batches."""

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from latentlab import pixels
from latentlab.data import collate, load_dataset
from latentlab.data.cifar import CLASS_NAMES, RECORD
from latentlab.errors import DataError

RNG = np.random.default_rng(0)


def everything(data):
    batch = data.__getitems__(list(range(len(data))))
    return batch.x, batch.y


def indexed_images(n, h=4, w=5, c=None):
    """(N, H, W[, C]) uint8 images whose first pixel is their index, the rest random."""
    images = RNG.integers(0, 256, size=(n, h, w) + ((c,) if c else ()), dtype=np.uint8)
    images[:, 0, 0] = np.arange(n)[:, None] if c else np.arange(n)
    return images


def item_index(x: torch.Tensor) -> int:
    """Recover the index written into an item's first pixel by `indexed_images`."""
    return int(pixels.to_uint8(x[0, 0, 0]))


# --- .npz -----------------------------------------------------------------------------------


def test_npz_uint8_with_labels_gives_exact_pixels_and_a_fixed_holdout(tmp_path):
    images, labels = indexed_images(20), np.arange(20) % 3
    np.savez(tmp_path / "data.npz", images=images, labels=labels)
    train = load_dataset(str(tmp_path / "data.npz"))
    test = load_dataset(f"npz:{tmp_path / 'data.npz'}", "test")
    assert train.shape == (1, 4, 5) and train.class_names == ["0", "1", "2"]
    assert (len(train), len(test)) == (18, 2)
    seen = []
    for data in (train, test):
        x, y = everything(data)
        for xi, yi in zip(x, y, strict=True):
            i = item_index(xi)
            seen.append(i)
            assert torch.equal(xi[0], pixels.from_uint8(images[i])) and yi == labels[i]
    assert sorted(seen) == list(range(20))
    again = load_dataset(f"npz:{tmp_path / 'data.npz'}", "test")
    assert torch.equal(again.data, test.data)


def test_npz_uint8_extremes_map_to_minus_one_and_one(tmp_path):
    images = np.zeros((10, 1, 2), np.uint8)
    images[:, 0, 1] = 255
    np.savez(tmp_path / "x.npz", images=images)
    x, y = everything(load_dataset(f"npz:{tmp_path / 'x.npz'}"))
    assert torch.equal(x[0], torch.tensor([[[-1.0, 1.0]]])) and set(y.tolist()) == {-1}


def test_npz_float_rgb_without_labels_is_unlabelled(tmp_path):
    images = RNG.random((10, 3, 3, 3))
    images[0] = 0.0
    images[1] = 1.0
    np.savez(tmp_path / "f.npz", images=images)
    data = load_dataset(f"npz:{tmp_path / 'f.npz'},test_fraction=0.5,seed=2")
    other = load_dataset(f"npz:{tmp_path / 'f.npz'},test_fraction=0.5,seed=2", "test")
    assert data.shape == (3, 3, 3) and data.class_names == [] and len(data) == 5
    x = torch.cat([everything(data)[0], everything(other)[0]])
    expected = pixels.from_unit(images.transpose(0, 3, 1, 2))
    matched = [(expected == xi).flatten(1).all(1).nonzero().flatten().tolist() for xi in x]
    assert sorted(m[0] for m in matched) == list(range(10))  # exact, one to one
    assert -1.0 in x and 1.0 in x


def test_npz_alpha_is_dropped_and_test_arrays_give_the_test_split(tmp_path):
    images, test_images = indexed_images(4, c=4), indexed_images(3, c=4)
    np.savez(tmp_path / "a.npz", images=images, labels=[0, 1, 0, 1],
             images_test=test_images, labels_test=[1, 2, 1],
             class_names=np.array(["ant", "bee", "cow"]))
    train, test = (load_dataset(f"npz:{tmp_path / 'a.npz'}", s) for s in ("train", "test"))
    assert len(train) == 4 and len(test) == 3 and train.shape == (3, 4, 5)
    assert train.class_names == test.class_names == ["ant", "bee", "cow"]
    x, y = everything(test)
    assert torch.equal(x, pixels.from_uint8(test_images[..., :3].transpose(0, 3, 1, 2)))
    assert y.tolist() == [1, 2, 1]


def test_npz_class_count_spans_both_splits(tmp_path):
    np.savez(tmp_path / "a.npz", images=indexed_images(2), labels=[0, 0],
             images_test=indexed_images(2), labels_test=[0, 4])
    assert load_dataset(f"npz:{tmp_path / 'a.npz'}").num_classes == 5


@pytest.mark.parametrize("arrays, message", [
    ({"images": np.r_[RNG.random((3, 2, 2)), np.full((1, 2, 2), np.nan)]},
     r"images\[3\] contains NaN or inf"),
    ({"images": np.r_[RNG.random((2, 2, 2)), np.full((1, 2, 2), np.inf)]},
     r"images\[2\] contains NaN or inf"),
    ({"images": np.r_[RNG.random((2, 2, 2)), np.full((1, 2, 2), 255.0)]},
     r"images\[2\] has values in \[255, 255\]; float images must lie in \[0, 1\]"),
    ({"images": np.zeros((3, 2, 2, 2), np.uint8)}, r"has shape \(3, 2, 2, 2\)"),
    ({"images": np.zeros((3, 2), np.uint8)}, r"has shape \(3, 2\)"),
    ({"images": np.zeros((3, 2, 2), np.int64)}, "has dtype int64"),
    ({"images": np.zeros((0, 2, 2), np.uint8)}, "holds no images"),
    ({"pictures": np.zeros((3, 2, 2), np.uint8)}, r"no 'images' array \(found: pictures\)"),
    ({"images": np.zeros((3, 2, 2), np.uint8), "labels": [0, -1, 0]},
     r"labels\[1\] is -1; labels must be >= 0"),
    ({"images": np.zeros((3, 2, 2), np.uint8), "labels": [0, 1]}, "must be \\(3,\\) integers"),
    ({"images": np.zeros((3, 2, 2), np.uint8), "labels": [0.0, 1.0, 1.0]}, "integers"),
    ({"images": np.zeros((3, 2, 2), np.uint8), "labels": [0, 1, 2],
      "class_names": np.array(["a", "b"])}, r"labels\[2\] is 2, outside \[0, 2\)"),
    ({"images": np.zeros((3, 2, 2), np.uint8), "images_test": np.zeros((3, 2, 2), np.uint8),
      "labels": [0, 1, 0]}, "has labels for one split but no 'labels_test'"),
])
def test_bad_npz_raises_naming_file_and_problem(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message) as error:
        load_dataset(f"npz:{tmp_path / 'bad.npz'}")
    assert str(error.value).startswith(str(tmp_path / "bad.npz"))


def test_npz_is_never_unpickled(tmp_path):
    np.savez(tmp_path / "evil.npz", images=np.array([object(), object()], dtype=object))
    with pytest.raises(DataError, match="without unpickling"):
        load_dataset(f"npz:{tmp_path / 'evil.npz'}")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="junk.npz"):
        load_dataset(f"npz:{tmp_path / 'junk.npz'}")


# --- MNIST ----------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()


def write_mnist(root, gz=False, n_train=6, n_test=3):
    """IDX files with random 28x28 images and labels 0..9; returns {split: (images, labels)}."""
    root.mkdir(exist_ok=True)
    data = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = RNG.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = RNG.integers(0, 10, size=n, dtype=np.uint8)
        for stem, raw in ((f"{prefix}-images-idx3-ubyte", idx_bytes(images, 0x803)),
                          (f"{prefix}-labels-idx1-ubyte", idx_bytes(labels, 0x801))):
            (root / (stem + ".gz" if gz else stem)).write_bytes(gzip.compress(raw) if gz else raw)
        data[split] = (images, labels)
    return data


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files_give_exact_pixels_and_labels(tmp_path, gz):
    written = write_mnist(tmp_path / "mnist", gz=gz)
    for split, (images, labels) in written.items():
        data = load_dataset(str(tmp_path / "mnist"), split)  # the kind is inferred
        x, y = everything(data)
        assert data.shape == (1, 28, 28) and data.class_names == [str(k) for k in range(10)]
        assert torch.equal(x[:, 0], pixels.from_uint8(images))
        assert y.tolist() == labels.tolist()


def _rewrite(path, change):
    path.write_bytes(change(path.read_bytes()))


@pytest.mark.parametrize("file, change, message", [
    ("train-images-idx3-ubyte", lambda b: b"\x00\x00\x08\x01" + b[4:],
     "IDX magic number is 0x00000801, expected 0x00000803"),
    ("train-labels-idx1-ubyte", lambda b: b"\x00\x00\x08\x03" + b[4:],
     "IDX magic number is 0x00000803, expected 0x00000801"),
    ("train-images-idx3-ubyte", lambda b: b[:-10], r"bytes, expected 4720 for an IDX array"),
    ("train-images-idx3-ubyte", lambda b: b[:6], "too short for an IDX header"),
    ("train-labels-idx1-ubyte", lambda b: idx_bytes(np.zeros(5, np.uint8), 0x801),
     "5 labels for 6 images"),
    ("train-labels-idx1-ubyte", lambda b: idx_bytes(np.array([0, 1, 2, 3, 10, 0], np.uint8),
                                                    0x801), "label 10 of item 4 is outside 0..9"),
])
def test_bad_idx_files_raise_naming_the_file(tmp_path, file, change, message):
    write_mnist(tmp_path)
    _rewrite(tmp_path / file, change)
    with pytest.raises(DataError, match=message) as error:
        load_dataset(f"mnist:{tmp_path}")
    assert str(error.value).startswith(str(tmp_path / file))


def test_missing_or_damaged_mnist_files(tmp_path):
    write_mnist(tmp_path, gz=True)
    _rewrite(tmp_path / "t10k-images-idx3-ubyte.gz", lambda b: b[:20])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: cannot read"):
        load_dataset(f"mnist:{tmp_path}", "test")
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing train-labels-idx1-ubyte"):
        load_dataset(f"mnist:{tmp_path}")


# --- CIFAR-10 -------------------------------------------------------------------------------


def write_cifar(root, per_file=2, n_test=3):
    """Binary batches of random records; returns {split: (labels (N,), images (N, 3, 32, 32))}."""
    root.mkdir(exist_ok=True)
    data = {}
    names = {"train": [f"data_batch_{k}.bin" for k in range(1, 6)], "test": ["test_batch.bin"]}
    for split, files in names.items():
        records = []
        for name in files:
            block = RNG.integers(0, 256, size=(per_file if split == "train" else n_test, RECORD),
                                 dtype=np.uint8)
            block[:, 0] %= 10
            (root / name).write_bytes(block.tobytes())
            records.append(block)
        block = np.concatenate(records)
        data[split] = (block[:, 0], block[:, 1:].reshape(-1, 3, 32, 32))
    return data


def test_cifar_binary_batches_give_exact_pixels_and_labels(tmp_path):
    written = write_cifar(tmp_path)
    for split, (labels, images) in written.items():
        data = load_dataset(str(tmp_path), split)  # the kind is inferred
        x, y = everything(data)
        assert data.shape == (3, 32, 32) and data.class_names == CLASS_NAMES
        assert len(data) == (10 if split == "train" else 3)
        assert torch.equal(x, pixels.from_uint8(images)) and y.tolist() == labels.tolist()
    # the red plane comes first: a record of 1024 x 255 then zeros is pure red
    record = np.zeros(RECORD, np.uint8)
    record[1:1025] = 255
    (tmp_path / "test_batch.bin").write_bytes(record.tobytes())
    x, _ = load_dataset(f"cifar10:{tmp_path}", "test").load(0)
    assert (x[0] == 1).all() and (x[1:] == -1).all()


def test_cifar_reads_class_names_and_pickles_without_its_pixels(tmp_path):
    write_cifar(tmp_path, per_file=20)
    names = [f"thing{k}" for k in range(10)]
    (tmp_path / "batches.meta.txt").write_text("\n".join(names) + "\n\n")
    data = load_dataset(f"cifar10:{tmp_path}")
    assert data.class_names == names
    data.load(0)  # opens the memory maps
    assert len(pickle.dumps(data)) < 20 * 5 * RECORD / 4  # workers reopen the files
    loader = DataLoader(data, batch_sampler=[[0, 50, 99], [1]], collate_fn=collate,
                        num_workers=2)
    first = next(iter(loader))
    assert torch.equal(first.x, data.__getitems__([0, 50, 99]).x)


@pytest.mark.parametrize("change, message", [
    (lambda b: b[:-1], "data_batch_3.bin: 6145 bytes is not a whole number of 3073-byte records"),
    (lambda b: b"", "data_batch_3.bin: 0 bytes"),
    (lambda b: b[:RECORD] + bytes([12]) + b[RECORD + 1:],
     "data_batch_3.bin: label 12 of record 1 is outside 0..9"),
])
def test_bad_cifar_files_raise_naming_the_file(tmp_path, change, message):
    write_cifar(tmp_path)
    _rewrite(tmp_path / "data_batch_3.bin", change)
    with pytest.raises(DataError, match=message):
        load_dataset(f"cifar10:{tmp_path}")


def test_cifar_missing_batch_and_bad_meta(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "batches.meta.txt").write_text("a\nb\n")
    with pytest.raises(DataError, match="batches.meta.txt: 2 class names, expected 10"):
        load_dataset(f"cifar10:{tmp_path}")
    (tmp_path / "test_batch.bin").unlink()
    with pytest.raises(DataError, match="test_batch.bin: missing"):
        load_dataset(f"cifar10:{tmp_path}", "test")
