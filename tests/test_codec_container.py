"""The codec's container: exact round trips, and one CodecError for every malformed file."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from latentlab.codec.container import (
    CRC,
    FIXED,
    MAGIC,
    MAX_TILES,
    CodecError,
    Header,
    ImageEntry,
    header_size,
    pack,
    tile_grid,
    unpack,
)
from latentlab.codec.images import names_for, safe_name
from latentlab.codec.tiles import from_tiles, to_tiles
from latentlab.errors import UserError

IMAGES = (ImageEntry(8, 8, 1, 1), ImageEntry(13, 21, 2, 3, "cat"))


def header(images=IMAGES, **kw) -> Header:
    fields = dict(channels=1, tile=(8, 8), grid=(4, 4), vocab=32, chunk=64,
                  fingerprint=bytes(range(8)), images=tuple(images), tokens_crc=1234)
    return Header(**(fields | kw))


def recrc(data: bytes) -> bytes:
    """`data` with its trailing CRC32 recomputed (a crafted file that passes the checksum)."""
    return data[:-4] + CRC.pack(zlib.crc32(data[:-4]))


def test_round_trip_and_sizes():
    h, payload = header(), bytes(range(16))
    data = pack(h, payload)
    assert unpack(data) == (h, payload)
    assert len(data) == header_size(h) + len(payload)
    assert data[:4] == MAGIC and FIXED.size == 44


def test_same_size_unnamed_images_share_one_table_entry():
    one = ImageEntry(8, 8, 1, 1)
    many, single = header(images=[one] * 1000), header(images=[one])
    assert header_size(many) == header_size(single) == 44 + 9 + 4
    assert unpack(pack(many, b""))[0] == many
    named = header(images=[ImageEntry(8, 8, 1, 1, f"n{i}") for i in range(3)])
    assert unpack(pack(named, b""))[0] == named


@pytest.mark.parametrize("cut", [0, 2, 10, 47, -1])
def test_truncated(cut):
    data = pack(header(), bytes(8))
    with pytest.raises(CodecError, match="truncated"):
        unpack(data[:cut])


def test_foreign_extended_damaged_and_future_files():
    data = pack(header(), bytes(8))
    with pytest.raises(CodecError, match="not a latentlab codec file"):
        unpack(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(CodecError, match="unexpected bytes after the end"):
        unpack(data + b"\0")
    flipped = bytearray(data)
    flipped[50] ^= 0x10
    with pytest.raises(CodecError, match="damaged"):
        unpack(bytes(flipped))
    future = bytearray(data)
    future[4] = 2
    with pytest.raises(CodecError, match="format version 2"):
        unpack(recrc(bytes(future)))
    assert issubclass(CodecError, UserError)  # the CLI prints it as one line, exit status 2


def _with_field(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return recrc(bytes(out))


@pytest.mark.parametrize(("offset", "fmt", "value", "match"), [
    (5, "<B", 2, "channels is 2"),
    (6, "<H", 0, "tile"),
    (10, "<H", 3, "does not divide"),
    (14, "<I", 1, "vocabulary is 1"),
    (18, "<H", 0, "chunk is 0"),
    (28, "<I", 0, "0 images"),
    (28, "<I", 3, "image table ends"),
    (36, "<I", 1000, "truncated"),
    (36, "<I", 3, "unexpected bytes"),
    (44, "<H", 40, "tile grid"),  # first image's height: its tile grid no longer fits
])
def test_crafted_headers_with_a_valid_crc_are_refused(offset, fmt, value, match):
    data = pack(header(), bytes(8))
    with pytest.raises(CodecError, match=match):
        unpack(_with_field(data, offset, fmt, value))


def test_unsafe_and_repeated_names_are_refused():
    for bad in ("../etc", ".hidden", "a/b", "x" * 200):
        with pytest.raises(ValueError, match="unsafe name"):
            pack(header(images=[ImageEntry(8, 8, 1, 1, bad)]), b"")
    with pytest.raises(ValueError, match="repeats the name"):
        pack(header(images=[ImageEntry(8, 8, 1, 1, "a")] * 2), b"")


def test_too_many_tiles_are_refused():
    side = 16384
    rows, cols = tile_grid(side, side, (8, 8))
    big = header(images=[ImageEntry(side, side, rows, cols)] * 2)
    assert big.tiles > MAX_TILES
    with pytest.raises(ValueError, match="tiles"):
        pack(big, b"")


def test_names_are_sanitised_and_made_distinct():
    assert safe_name("../../etc/pass wd") == "_.._etc_pass_wd"
    assert names_for(["a/x.png", "b/x.jpg", "d/....png", "c/y z.png"]) == ["x", "x-2", "image-0002",
                                                                      "y_z"]


@pytest.mark.parametrize("shape", [(8, 8, 1), (13, 21, 3), (1, 1, 1), (16, 9, 3)])
def test_tiles_round_trip_and_pad_by_edge_replication(shape):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    tiles = to_tiles(image, (8, 8))
    rows, cols = tile_grid(shape[0], shape[1], (8, 8))
    assert tiles.shape == (rows * cols, shape[2], 8, 8)
    np.testing.assert_array_equal(from_tiles(tiles, *shape[:2]), image)
    last = tiles[-1]  # bottom-right tile: its padding repeats the image's last row and column
    h, w = shape[0] - 8 * (rows - 1), shape[1] - 8 * (cols - 1)
    np.testing.assert_array_equal(last[:, h:, :w], np.repeat(last[:, h - 1:h, :w], 8 - h, 1))
    np.testing.assert_array_equal(last[:, :, w:], np.repeat(last[:, :, w - 1:w], 8 - w, 2))
