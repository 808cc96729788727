"""Property tests: a mutated, truncated or extended codec file is decoded to the original or
refused with a CodecError, never another exception, never a hang (each decode runs under an
alarm). The model is the tiny one of test_codec.py: the property holds for any weights."""

from __future__ import annotations

import contextlib
import signal
import zlib

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latentlab.codec import CodecError, compress, decompress
from tests.test_codec import digits, tiny_model

TIME_BOUND_S = 10
"""A decode of these files takes ~0.1 s; this leaves room for a busy machine, not for a hang."""

MODEL = tiny_model()
IMAGES = digits(3) + [np.random.default_rng(0).integers(0, 256, (11, 9, 1), dtype=np.uint8)]
NAMED = compress(MODEL, IMAGES, ["a", "b", "c", "d"]).data  # a table entry per image
SHARED = compress(MODEL, digits(4)).data  # one table entry for all
ORIGINALS = {data: decompress(MODEL, data) for data in (NAMED, SHARED)}


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_bound(seconds: int):
    """Raise Hang if the block runs longer than `seconds` (SIGALRM: main thread, Unix)."""
    def expire(signum, frame):
        raise Hang(f"still decoding after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def edit(data: bytes, kind: str, position: int, blob: bytes) -> bytes:
    position %= len(data) + 1
    if kind == "flip":
        position %= len(data)
        return data[:position] + bytes([data[position] ^ (blob[0] or 1)]) + data[position + 1:]
    if kind == "truncate":
        return data[:position]
    if kind == "extend":
        return data + blob
    if kind == "insert":
        return data[:position] + blob + data[position:]
    return data[:position] + data[position + len(blob):]  # delete len(blob) bytes


EDITS = st.lists(st.tuples(st.sampled_from(["flip", "truncate", "extend", "insert", "delete"]),
                           st.integers(0, 1 << 16), st.binary(min_size=1, max_size=24)),
                 min_size=1, max_size=3)
FILES = st.sampled_from([NAMED, SHARED])


def check(original: bytes, data: bytes) -> None:
    """Decoded to the original, or refused with a CodecError, within the time bound."""
    try:
        with time_bound(TIME_BOUND_S):
            decoded = decompress(MODEL, data)
    except CodecError:
        return
    expected = ORIGINALS[original]
    assert torch.equal(decoded.tokens, expected.tokens)
    assert decoded.names == expected.names
    for a, b in zip(decoded.images, expected.images, strict=True):
        np.testing.assert_array_equal(a, b)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(original=FILES, edits=EDITS)
def test_mutated_truncated_or_extended_files_decode_to_the_original_or_are_refused(original,
                                                                                   edits):
    data = original
    for kind, position, blob in edits:
        data = edit(data, kind, position, blob) if data else blob
    check(original, data)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(original=FILES, edits=EDITS)
def test_crafted_files_with_a_valid_crc_are_refused_or_decoded_within_the_bound(original, edits):
    """The same edits with the trailing CRC32 recomputed: now the header's bounds, the payload
    capacity check, the range decoder's failures and the token checksum must do the work. A
    file that still decodes is a valid file; it must give consistent output."""
    data = original
    for kind, position, blob in edits:
        data = edit(data, kind, position, blob) if data else blob
    if len(data) > 4:
        data = data[:-4] + zlib.crc32(data[:-4]).to_bytes(4, "little")
    try:
        with time_bound(TIME_BOUND_S):
            decoded = decompress(MODEL, data)
    except CodecError:
        return
    assert len(decoded.images) == len(decoded.names)
    assert all(im.dtype == np.uint8 and im.shape[2] == 1 for im in decoded.images)
