"""Image folders written by the tests: layouts, exact pixels, lazy decoding, corrupt files."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from latentlab import pixels
from latentlab.data import collate, describe, load_dataset
from latentlab.errors import DataError

RNG = np.random.default_rng(0)


def write_image(path, array: np.ndarray) -> np.ndarray:
    """Save (H, W) or (H, W, C) uint8 as a lossless PNG (or any format by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return array


def random_image(h=6, w=6, c=3) -> np.ndarray:
    return RNG.integers(0, 256, size=(h, w, c) if c > 1 else (h, w), dtype=np.uint8)


def as_item(array: np.ndarray) -> torch.Tensor:
    """(H, W[, C]) uint8 -> the (C, H, W) float item the dataset should give."""
    chw = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return pixels.from_uint8(np.ascontiguousarray(chw))


def class_folder(root, per_class=5, classes=("cat", "dog", "emu")):
    """root/<class>/<k>.png with random RGB pixels; returns {relative path: (pixels, label)}."""
    written = {}
    for label, name in enumerate(classes):
        for k in range(per_class):
            rel = f"{name}/{k}.png"
            written[rel] = (write_image(root / rel, random_image()), label)
    return written


def items(data):
    return {data.files[i]: data.load(i) for i in range(len(data))}


def test_class_folders_become_labels_with_exact_pixels(tmp_path):
    written = class_folder(tmp_path / "imgs")
    train = load_dataset(f"folder:{tmp_path / 'imgs'}")
    test = load_dataset(f"folder:{tmp_path / 'imgs'}", "test")
    assert train.class_names == ["cat", "dog", "emu"] and train.shape == (3, 6, 6)
    assert len(train) == 13 and len(test) == 2  # round(15 * 0.1) = 2
    got = items(train) | items(test)
    assert set(got) == set(written)  # the splits partition the folder
    for rel, (x, y) in got.items():
        assert torch.equal(x, as_item(written[rel][0])) and y == written[rel][1]
    assert items(load_dataset(f"folder:{tmp_path / 'imgs'}", "test")).keys() == got.keys() - \
        items(train).keys()  # the same holdout every time


def test_white_and_black_pixels_map_to_the_ends_of_the_range(tmp_path):
    write_image(tmp_path / "train" / "a.png", np.array([[0, 255], [255, 0]], dtype=np.uint8))
    write_image(tmp_path / "test" / "b.png", np.full((2, 2), 255, dtype=np.uint8))
    x, y = load_dataset(f"folder:{tmp_path}").load(0)
    assert torch.equal(x, torch.tensor([[[-1.0, 1.0], [1.0, -1.0]]])) and y == -1


def test_a_flat_folder_is_unlabelled(tmp_path):
    for k in range(10):
        write_image(tmp_path / f"{k:02d}.png", random_image(c=1))
    data = load_dataset(str(tmp_path))  # a bare directory is an image folder
    assert data.class_names == [] and data.shape == (1, 6, 6) and len(data) == 9
    assert data.__getitems__([0, 1]).y.tolist() == [-1, -1]


def test_train_and_test_subfolders_are_the_splits(tmp_path):
    train_files = class_folder(tmp_path / "train", per_class=3, classes=("a", "b"))
    test_files = class_folder(tmp_path / "test", per_class=2, classes=("b", "c"))
    train = load_dataset(f"folder:{tmp_path}")
    test = load_dataset(f"folder:{tmp_path}", "test")
    assert train.class_names == test.class_names == ["a", "b", "c"]  # both splits, one encoding
    assert sorted(train.files) == sorted(train_files) and sorted(test.files) == sorted(test_files)
    assert {rel: y for rel, (_, y) in items(test).items()} == {
        "b/0.png": 1, "b/1.png": 1, "c/0.png": 2, "c/1.png": 2}


def test_channels_follow_the_first_image_or_the_option(tmp_path):
    grey = write_image(tmp_path / "a.png", random_image(c=1))
    write_image(tmp_path / "b.png", np.dstack([random_image(c=3), np.full((6, 6), 9, np.uint8)]))
    for k in range(8):
        write_image(tmp_path / f"c{k}.png", random_image(c=1))
    data = load_dataset(f"folder:{tmp_path}")
    assert data.shape == (1, 6, 6)  # the first image, a.png, is grey
    rgb = load_dataset(f"folder:{tmp_path},channels=3")
    assert rgb.shape == (3, 6, 6)
    i = rgb.files.index("a.png")
    x, _ = rgb.load(i)
    assert torch.equal(x, as_item(np.dstack([grey] * 3)))  # grey copied to R, G and B


def test_rgba_loses_its_alpha(tmp_path):
    rgba = np.dstack([random_image(c=3), np.full((6, 6), 7, np.uint8)])
    for k in range(3):
        write_image(tmp_path / f"{k}.png", rgba)
    data = load_dataset(f"folder:{tmp_path}")
    assert data.shape == (3, 6, 6)
    assert torch.equal(data.load(0)[0], as_item(rgba[..., :3]))


def test_mixed_sizes_need_resize(tmp_path):
    for k in range(4):
        write_image(tmp_path / "train" / f"{k}.png", random_image(8, 8))
    write_image(tmp_path / "test" / "odd.png", random_image(5, 7))
    odd = load_dataset(f"folder:{tmp_path}", "test")
    assert odd.shape == (3, 8, 8)  # the train split's first image sets the size
    with pytest.raises(DataError) as error:
        odd.load(0)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'test' / 'odd.png'}: image is 5x7 (HxW), expected 8x8")
    assert "resize=8" in message and "\n" not in message
    resized = load_dataset(f"folder:{tmp_path},resize=4x6", "test")
    assert resized.shape == (3, 4, 6) and resized.__getitems__([0]).x.shape == (1, 3, 4, 6)
    square = load_dataset(f"folder:{tmp_path},resize=5")
    assert square.__getitems__([0, 1, 2, 3]).x.shape == (4, 3, 5, 5)


@pytest.mark.parametrize("setup", ["empty", "no images", "hidden only"])
def test_a_folder_without_images_is_an_error_naming_it(tmp_path, setup):
    folder = tmp_path / "nothing"
    folder.mkdir()
    if setup == "no images":
        (folder / "readme.txt").write_text("no pictures here")
    if setup == "hidden only":
        write_image(folder / ".hidden.png", random_image())
    with pytest.raises(DataError, match=f"{folder}: no images found"):
        load_dataset(f"folder:{folder}")


def test_an_image_beside_class_folders_is_an_error(tmp_path):
    class_folder(tmp_path, per_class=2)
    write_image(tmp_path / "stray.png", random_image())
    with pytest.raises(DataError, match="stray.png: an image beside class sub-folders"):
        load_dataset(f"folder:{tmp_path}")


def corrupt_folder(root):
    """root/train: nine good images and img6z.png of garbage bytes, the eighth in file order."""
    good = {f"img{k}.png": write_image(root / "train" / f"img{k}.png", random_image())
            for k in range(9)}
    (root / "train" / "img6z.png").write_bytes(b"this is not a png at all")
    write_image(root / "test" / "t.png", random_image())
    return good


def test_a_corrupt_image_raises_naming_the_file(tmp_path):
    corrupt_folder(tmp_path)
    data = load_dataset(f"folder:{tmp_path}")
    assert data.files[7] == "img6z.png"
    with pytest.raises(DataError) as error:
        data.__getitems__([6, 7])
    assert str(error.value) == (f"{tmp_path / 'train' / 'img6z.png'}: cannot decode image "
                                f"(cannot identify image file)")


def test_a_truncated_image_raises_naming_the_file(tmp_path):
    corrupt_folder(tmp_path)
    path = tmp_path / "train" / "img3.png"
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataError, match=r"img3\.png: cannot decode image \(.*truncated"):
        load_dataset(f"folder:{tmp_path}").load(3)


def test_skip_corrupt_replaces_the_item_with_the_next_readable_one(tmp_path):
    good = corrupt_folder(tmp_path)
    data = load_dataset(f"folder:{tmp_path}", skip_corrupt=True)
    with pytest.warns(UserWarning, match="img6z.png"):
        batch = data.__getitems__([7, 0, 7])
    assert batch.skipped == 2
    assert torch.equal(batch.x[0], as_item(good["img7.png"]))  # the next file in order
    assert torch.equal(batch.x[2], batch.x[0])
    assert torch.equal(batch.x[1], as_item(good["img0.png"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per file: silent the second time
        assert data.__getitems__([7]).skipped == 1
        assert data.__getitems__([8]).skipped == 0


def test_construction_decodes_nothing_but_the_first_header(tmp_path):
    class_folder(tmp_path, per_class=4)
    data = load_dataset(f"folder:{tmp_path}")
    for path in tmp_path.rglob("*.png"):
        path.write_bytes(b"corrupted after indexing")
    with pytest.raises(DataError, match="cannot decode image"):
        data.load(0)


def test_corrupt_images_do_not_stop_construction(tmp_path):
    write_image(tmp_path / "a.png", random_image())
    for k in range(9):
        (tmp_path / f"b{k}.png").write_bytes(b"garbage")
    data = load_dataset(f"folder:{tmp_path}")
    assert len(data) == 9 and data.shape == (3, 6, 6)


def test_works_with_dataloader_workers(tmp_path):
    class_folder(tmp_path, per_class=6)
    data = load_dataset(f"folder:{tmp_path}")
    assert pickle.loads(pickle.dumps(data)).files == data.files
    order = [[3, 0, 5], [1, 2, 4], [6, 7]]
    loader = DataLoader(data, batch_sampler=order, collate_fn=collate, num_workers=2)
    batches = list(loader)
    for indices, batch in zip(order, batches, strict=True):
        expected = data.__getitems__(indices)
        assert torch.equal(batch.x, expected.x) and torch.equal(batch.y, expected.y)


def test_describe_counts_labels_and_names_a_corrupt_file(tmp_path):
    class_folder(tmp_path / "train", per_class=3, classes=("a", "b"))
    class_folder(tmp_path / "test", per_class=1, classes=("a", "b"))
    grid = tmp_path / "out" / "grid.png"
    info = describe(f"folder:{tmp_path}", grid=grid)
    assert info["kind"] == "folder"
    assert info["splits"]["train"]["labels"] == {"a": 3, "b": 3}
    assert info["splits"]["test"]["labels"] == {"a": 1, "b": 1}
    assert info["splits"]["train"]["shape"] == [3, 6, 6]
    assert Image.open(grid).size[0] > 0
    (tmp_path / "test" / "b" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataError, match=r"test/b/0\.png: cannot decode image"):
        describe(f"folder:{tmp_path}")
