"""`describe`: every item checked, label histograms, example grids and the printed summary."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from latentlab.data import describe, format_description, load_dataset
from latentlab.data import info as info_module
from latentlab.data.base import ArrayDataset, LatentlabDataset
from latentlab.errors import DataError


def test_describe_digits_counts_every_label_and_saves_a_grid(tmp_path):
    info = describe("digits", grid=tmp_path / "grid.png")
    assert info["spec"] == "digits" and info["kind"] == "digits"
    train = info["splits"]["train"]
    expected = np.bincount(load_dataset("digits").labels.numpy(), minlength=10)
    assert train["labels"] == {str(k): int(expected[k]) for k in range(10)}
    assert sum(info["splits"]["test"]["labels"].values()) == info["splits"]["test"]["size"] == 360
    assert train["shape"] == [1, 8, 8] and train["dtype"] == "float32"
    assert train["min"] == -1.0 and train["max"] == 1.0
    image = Image.open(info["grid"])
    assert image.size == (292, 292)  # 8 x 8 tiles of 8 px, 1 px borders, enlarged 4x
    json.dumps(info)  # plain data, ready for `--json`


def test_describe_unlabelled_and_captioned_data(tmp_path):
    np.savez(tmp_path / "u.npz", images=np.zeros((10, 4, 4), np.uint8))
    info = describe(str(tmp_path / "u.npz"))
    assert info["kind"] == "npz" and info["grid"] is None
    assert info["splits"]["train"]["labels"] == "unlabelled"
    assert info["splits"]["train"]["size"] == 9 and info["splits"]["test"]["size"] == 1
    assert describe("shapes:size=8,n=8")["splits"]["train"]["captions"] is True


def test_describe_vectors_saves_a_scatter_plot(tmp_path):
    info = describe("mixture:k=3,d=4,n=60", grid=tmp_path / "scatter.png")
    assert info["splits"]["train"]["shape"] == [4] and info["splits"]["test"]["size"] == 15
    assert sum(info["splits"]["train"]["labels"].values()) == 60
    assert Image.open(tmp_path / "scatter.png").format == "PNG"
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind


def test_format_description_reads_well():
    text = format_description(describe("faces:size=16"))
    assert "faces:size=16 (kind: faces)" in text
    assert "train    160 items of (1, 16, 16) float32, values in [-1, 1]" in text
    assert "labels non-face: 20, face: 20" in text
    assert "(10,) float32" in format_description(describe("mixture:n=40"))


class _Broken(LatentlabDataset):
    """Items the loaders would never produce, to show describe checks each one."""

    def __init__(self, bad: str):
        self.bad, self.name, self.shape, self.class_names = bad, "broken[train]", (1, 2, 2), ["a"]

    def __len__(self):
        return 7

    def load(self, i):
        x, y = torch.zeros(1, 2, 2), 0
        if i == 5 and self.bad == "nan":
            x[0, 0, 0] = float("nan")
        if i == 5 and self.bad == "range":
            x[0, 1, 1] = 1.5
        if i == 5 and self.bad == "label":
            y = 3
        return x, y


@pytest.mark.parametrize("bad, message", [("nan", "item 5 contains NaN or inf"),
                                          ("range", r"item 5 has values outside \[-1.0, 1.0\]"),
                                          ("label", r"item 5 has a label outside \[0, 1\)")])
def test_every_item_is_checked_chunk_by_chunk(monkeypatch, bad, message):
    monkeypatch.setattr(info_module, "CHUNK", 2)  # item 5 sits in the third chunk
    with pytest.raises(DataError, match=f"broken\\[train\\]: {message}"):
        info_module.summarise(_Broken(bad))
    assert info_module.summarise(_Broken("none"))["labels"] == {"a": 7}


def test_summarise_tracks_the_value_range():
    data = ArrayDataset(torch.tensor([[0.5, -0.25], [2.0, 1.0]]), None, [], "v[train]")
    summary = info_module.summarise(data)
    assert (summary["min"], summary["max"]) == (-0.25, 2.0)  # vectors are not bound to [-1, 1]
