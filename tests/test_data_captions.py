"""Captioned image folders: NAME.txt beside NAME.png, captions.jsonl, and bad captions."""

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from latentlab.data import load_dataset
from latentlab.errors import DataError

RNG = np.random.default_rng(0)


def write_image(path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)).save(path)


def presplit(root, names=("a", "b", "c")) -> None:
    """root/train/{a,b,c}.png and root/test/t.png, no captions."""
    for name in names:
        write_image(root / "train" / f"{name}.png")
    write_image(root / "test" / "t.png")


def write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_text_files_beside_the_images_are_their_captions(tmp_path):
    presplit(tmp_path)
    for name in "abc":
        (tmp_path / "train" / f"{name}.txt").write_text(f"  caption of {name}\n")
    (tmp_path / "test" / "t.txt").write_bytes("a test caption".encode("utf-8-sig"))
    train, test = load_dataset(f"folder:{tmp_path}"), load_dataset(f"folder:{tmp_path}", "test")
    assert train.captioned and test.captioned
    assert [train.caption(i) for i in range(3)] == ["caption of a", "caption of b",
                                                    "caption of c"]
    assert test.caption(0) == "a test caption"


def test_captions_jsonl_with_hugging_face_keys(tmp_path):
    for rel in ("x/1.png", "x/2.png", "y/3.png"):
        write_image(tmp_path / "train" / rel)
    write_image(tmp_path / "test" / "x" / "4.png")
    write_jsonl(tmp_path / "train" / "captions.jsonl", [
        {"file_name": "x/1.png", "text": "one"}, {"file_name": "x/2.png", "caption": "two"},
        {"file_name": "y/3.png", "text": "three", "extra": 3}])
    write_jsonl(tmp_path / "captions.jsonl", [{"file_name": "test/x/4.png", "text": "four"}])
    (tmp_path / "train" / "x" / "1.txt").write_text("the jsonl wins")
    train, test = load_dataset(f"folder:{tmp_path}"), load_dataset(f"folder:{tmp_path}", "test")
    assert train.class_names == ["x", "y"] and train.labels.tolist() == [0, 0, 1]
    assert [train.caption(i) for i in range(3)] == ["one", "two", "three"]
    assert test.caption(0) == "four"


def test_a_folder_without_captions_stays_uncaptioned(tmp_path):
    presplit(tmp_path)
    data = load_dataset(f"folder:{tmp_path}")
    assert not data.captioned and data.caption(0) is None


def _captioned_but(tmp_path, name: str, problem: str):
    """a, b, c captioned by .txt, except `name`, whose caption has `problem`."""
    presplit(tmp_path)
    for other in "abc":
        (tmp_path / "train" / f"{other}.txt").write_text(f"caption of {other}")
    txt = tmp_path / "train" / f"{name}.txt"
    if problem == "missing":
        txt.unlink()
    elif problem == "empty":
        txt.write_text(" \n")
    else:
        txt.write_bytes(b"caption \xff\xfe of latin-1")
    return tmp_path / "train" / f"{name}.png", txt


@pytest.mark.parametrize(("problem", "message"), [
    ("missing", "{png}: no caption (no b.txt beside it, no entry in captions.jsonl)"),
    ("empty", "{txt}: empty caption"),
    ("undecodable", "{txt}: cannot decode caption (not UTF-8)"),
])
def test_a_bad_caption_is_a_one_line_error_naming_the_file(tmp_path, problem, message):
    png, txt = _captioned_but(tmp_path, "b", problem)
    (tmp_path / "test" / "t.txt").write_text("fine")
    with pytest.raises(DataError) as error:
        load_dataset(f"folder:{tmp_path}")
    assert str(error.value) == message.format(png=png, txt=txt)
    assert load_dataset(f"folder:{tmp_path}", "test").caption(0) == "fine"


def test_an_empty_jsonl_caption_or_a_broken_line_names_the_file(tmp_path):
    write_image(tmp_path / "a.png")
    jsonl = tmp_path / "captions.jsonl"
    write_jsonl(jsonl, [{"file_name": "a.png", "text": ""}])
    with pytest.raises(DataError, match=rf"^{jsonl}: line 1: empty caption for a\.png$"):
        load_dataset(f"folder:{tmp_path}")
    jsonl.write_text('{"file_name": "a.png", "text": "ok"}\n{"file_name": \n')
    with pytest.raises(DataError, match=rf"^{jsonl}: line 2: not a UTF-8 JSON object$"):
        load_dataset(f"folder:{tmp_path}")
    write_jsonl(jsonl, [{"file": "a.png", "text": "no file_name key"}])
    with pytest.raises(DataError, match=r"line 1: needs a 'file_name' string"):
        load_dataset(f"folder:{tmp_path}")


@pytest.mark.parametrize("problem", ["missing", "empty", "undecodable"])
def test_skip_corrupt_skips_an_uncaptioned_item_like_a_corrupt_image(tmp_path, problem):
    _captioned_but(tmp_path, "b", problem)
    data = load_dataset(f"folder:{tmp_path}", skip_corrupt=True)
    assert data.files == ["a.png", "b.png", "c.png"]
    with pytest.warns(UserWarning, match=r"skipping image without a caption: .*b\.(png|txt)"):
        batch = data.__getitems__([0, 1, 2])
    assert batch.skipped == 1
    assert torch.equal(batch.x[1], batch.x[2])  # b is replaced by the next good item, c
    assert [data.caption(i) for i in range(3)] == ["caption of a", "caption of c",
                                                   "caption of c"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per file
        assert data.__getitems__([1]).skipped == 1
