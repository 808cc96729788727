"""The latent cache: exact round trips across shards, memory-mapped reads, atomic writes, and
refusal of foreign, damaged or incomplete caches."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

from latentlab.data import collate
from latentlab.data.latent_cache import META, LatentCache
from latentlab.data.latent_cache_writer import write_latent_cache
from latentlab.errors import DataError

SOURCE = {"tokenizer": "runs/a", "fingerprint": "1a2b3c4d"}
CLASSES = ["zero", "one", "two"]
N = 23  # with shard_size 10: shards of 10, 10, 3


def make_data(kind: str, n: int = N, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if kind == "latents":
        values = torch.randn(n, 4, 4, 4, generator=g)  # (N, C, h, w)
    else:
        values = torch.randint(0, 512, (n, 4, 4), generator=g)  # (N, h, w)
    return values, torch.randint(0, len(CLASSES), (n,), generator=g)


def batches(values, labels, size: int = 7):
    """Batches of 7 so that batch and shard boundaries (every 10 items) do not line up."""
    for i in range(0, len(values), size):
        yield values[i:i + size], labels[i:i + size]


def write(out, kind="latents", data=None, **kw):
    values, labels = make_data(kind) if data is None else data
    kw = {"shard_size": 10, **kw}
    return write_latent_cache(out, batches(values, labels), SOURCE, CLASSES, kind, **kw)


@pytest.mark.parametrize("kind", ["latents", "indices"])
def test_round_trip_across_shards(tmp_path, kind):
    values, labels = make_data(kind)
    out = write(tmp_path / "cache", kind, (values, labels))
    meta = json.loads((out / META).read_text())
    assert [s["count"] for s in meta["shards"]] == [10, 10, 3]
    assert sorted(p.name for p in out.iterdir()) == [
        META, "shard_00000.safetensors", "shard_00001.safetensors", "shard_00002.safetensors"]

    cache = LatentCache(out, expect_source=SOURCE)
    assert len(cache) == N and cache.kind == kind and cache.class_names == CLASSES
    assert cache.shape == tuple(values.shape[1:]) and cache.source == SOURCE
    rng = np.random.default_rng(0)
    for _ in range(3):  # unsorted, repeated, spanning all three shards
        idx = [int(i) for i in rng.integers(0, N, 12)] + [0, 9, 10, 19, 20, 22, -1]
        batch = collate(cache.__getitems__(idx))
        assert batch.x.dtype == values.dtype and batch.y.dtype == torch.int64
        assert torch.equal(batch.x, values[idx]) and torch.equal(batch.y, labels[idx])
    x, y = cache.load(15)
    assert torch.equal(x, values[15]) and y == int(labels[15])
    with pytest.raises(IndexError):
        cache.__getitems__([N])


def test_reads_are_memory_mapped(tmp_path):
    """Values come from the file on each read, not from a copy made when the cache opened: bytes
    rewritten in place after opening are seen by the next read."""
    values, labels = make_data("latents")
    out = write(tmp_path / "cache", data=(values, labels))
    cache = LatentCache(out, verify=False)
    assert torch.equal(cache.__getitems__([0]).x[0], values[0])
    shard = out / "shard_00000.safetensors"
    raw = shard.read_bytes()
    old = values[1].numpy().tobytes()
    assert raw.count(old) == 1
    with open(shard, "r+b") as f:  # same size, so the size check still passes
        f.seek(raw.index(old))
        f.write(np.full(values[1].shape, 7.0, np.float32).tobytes())
    assert torch.all(cache.__getitems__([1]).x == 7.0)
    assert torch.equal(cache.__getitems__([0, 2]).x, values[[0, 2]])


def test_failed_write_leaves_nothing(tmp_path):
    values, labels = make_data("latents")

    def failing():
        it = batches(values, labels, size=6)  # 12 items: one full shard already on disk
        yield next(it)
        yield next(it)
        raise RuntimeError("encoder crashed")

    with pytest.raises(RuntimeError, match="encoder crashed"):
        write_latent_cache(tmp_path / "cache", failing(), SOURCE, CLASSES, "latents",
                           shard_size=10)
    assert list(tmp_path.iterdir()) == []


def test_existing_cache_needs_overwrite(tmp_path):
    out = write(tmp_path / "cache")
    new_values, new_labels = make_data("latents", seed=1)
    with pytest.raises(DataError, match="already exists"):
        write(out, data=(new_values, new_labels))
    assert torch.equal(LatentCache(out).__getitems__([0]).x[0], make_data("latents")[0][0])
    write(out, data=(new_values, new_labels), overwrite=True)
    assert torch.equal(LatentCache(out).__getitems__(list(range(N))).x, new_values)
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]  # no old copy or temp left


def test_nan_refused_at_write(tmp_path):
    values, labels = make_data("latents")
    values[9, 1, 2, 3] = float("nan")  # batch 1 (items 7..13), its item 2
    with pytest.raises(DataError, match=r"batch 1: item 2 \(cache item 9\) contains NaN"):
        write(tmp_path / "cache", data=(values, labels))
    assert list(tmp_path.iterdir()) == []


def test_foreign_cache_refused_with_both_fingerprints(tmp_path):
    out = write(tmp_path / "cache")
    other = {"tokenizer": "runs/b", "fingerprint": "3c4d5e6f"}
    with pytest.raises(DataError) as err:
        LatentCache(out, expect_source=other)
    msg = str(err.value)
    assert "1a2b3c4d" in msg and "3c4d5e6f" in msg and "runs/a" in msg and "runs/b" in msg
    # the same tokenizer moved to another directory is still the same tokenizer
    LatentCache(out, expect_source={"tokenizer": "moved/a", "fingerprint": "1a2b3c4d"})


def test_damaged_shard_refused_when_verifying(tmp_path):
    out = write(tmp_path / "cache")
    shard = out / "shard_00001.safetensors"
    raw = bytearray(shard.read_bytes())
    raw[-5] ^= 0xFF  # a byte of data, not of the header
    shard.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"shard_00001\.safetensors: sha256 differs"):
        LatentCache(out)  # small cache: verified by default
    assert len(LatentCache(out, verify=False)) == N  # the documented fast path skips hashing


@pytest.mark.parametrize("change", ["truncated", "appended"])
def test_resized_shard_refused_without_verify(tmp_path, change):
    out = write(tmp_path / "cache")
    shard = out / "shard_00002.safetensors"
    raw = shard.read_bytes()
    shard.write_bytes(raw[:-4] if change == "truncated" else raw + bytes(4))
    with pytest.raises(DataError, match=r"shard_00002\.safetensors: .*bytes, the cache records"):
        LatentCache(out, verify=False)  # sizes are checked on every open


def test_bad_header_refused(tmp_path):
    out = write(tmp_path / "cache")
    shard = out / "shard_00000.safetensors"
    raw = bytearray(shard.read_bytes())
    raw[8] = ord("#")  # the header's opening "{"
    shard.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"shard_00000\.safetensors: safetensors header does not"):
        LatentCache(out, verify=False)


@pytest.mark.parametrize("damage", ["missing_meta", "broken_meta", "missing_shard"])
def test_incomplete_cache_refused(tmp_path, damage):
    out = write(tmp_path / "cache")
    if damage == "missing_meta":
        (out / META).unlink()
        pattern = r"cache\.json: missing"
    elif damage == "broken_meta":
        (out / META).write_text((out / META).read_text()[:-20])
        pattern = r"cache\.json: does not parse"
    else:
        (out / "shard_00001.safetensors").unlink()
        pattern = r"shard_00001\.safetensors: shard missing"
    with pytest.raises(DataError, match=pattern):
        LatentCache(out)


def test_pickles_without_its_memmaps(tmp_path):
    values, labels = make_data("latents")  # 9 KiB of values
    cache = LatentCache(write(tmp_path / "cache", data=(values, labels)))
    cache.__getitems__([0])  # maps are open now
    state = pickle.dumps(cache)
    assert len(state) < 4096  # paths and offsets, not data
    assert torch.equal(pickle.loads(state).__getitems__([3, 21]).x, values[[3, 21]])


def test_dataloader_with_workers(tmp_path):
    values, labels = make_data("latents")
    cache = LatentCache(write(tmp_path / "cache", data=(values, labels)))
    sampler = BatchSampler(SequentialSampler(cache), batch_size=8, drop_last=False)
    loader = DataLoader(cache, batch_sampler=sampler, collate_fn=collate, num_workers=2)
    got = list(loader)
    assert [len(b.x) for b in got] == [8, 8, 7]
    assert torch.equal(torch.cat([b.x for b in got]), values)
    assert torch.equal(torch.cat([b.y for b in got]), labels)
