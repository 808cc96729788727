"""Checkpoints: atomic, verified, pruned."""

from __future__ import annotations

import pytest
import torch

from latentlab.errors import CheckpointError
from latentlab.training import checkpoint


def _save(directory, step, keep=3, value=None):
    value = float(step) if value is None else value
    tensors = {"model.w": torch.full((3, 2), value), "model.b": torch.arange(4.0)}
    state = {"optimizers": {"main": {"state": {}, "param_groups": []}}, "rng": torch.arange(3)}
    return checkpoint.save(directory, step, tensors, state, {"config": "x: 1"}, keep=keep)


def test_round_trip(tmp_path):
    _save(tmp_path, 10)
    ckpt = checkpoint.load_latest(tmp_path)
    assert ckpt.step == 10
    assert torch.equal(ckpt.tensors["model.w"], torch.full((3, 2), 10.0))
    assert torch.equal(ckpt.state["rng"], torch.arange(3))
    assert ckpt.meta["config"] == "x: 1" and "version" in ckpt.meta


def test_keeps_the_last_n(tmp_path):
    for step in (1, 2, 3, 4, 5):
        _save(tmp_path, step, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step_*")) == ["step_00000004", "step_00000005"]
    assert checkpoint.load_latest(tmp_path).step == 5


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete_state", "meta"])
def test_damaged_checkpoint_is_refused(tmp_path, damage):
    path = _save(tmp_path, 7)
    weights = path / checkpoint.WEIGHTS
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-10])
    elif damage == "flip":
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "delete_state":
        (path / checkpoint.STATE).unlink()
    else:
        (path / checkpoint.META).write_text("{not json")
    with pytest.raises(CheckpointError) as err:
        checkpoint.load_latest(tmp_path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_failed_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    _save(tmp_path, 1)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, 2)
    assert checkpoint.load_latest(tmp_path).step == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no debris


def test_interrupted_write_is_invisible(tmp_path):
    """A process killed mid-write leaves a hidden temporary directory that is never read."""
    _save(tmp_path, 1)
    debris = tmp_path / ".step_00000002.abc"
    debris.mkdir()
    (debris / checkpoint.WEIGHTS).write_bytes(b"partial")
    assert checkpoint.load_latest(tmp_path).step == 1


def test_no_checkpoint(tmp_path):
    assert checkpoint.latest(tmp_path) is None
    with pytest.raises(CheckpointError, match="no checkpoint"):
        checkpoint.load_latest(tmp_path)
