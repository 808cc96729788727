"""The codec's file format: a fixed header, an image table, the range-coded payload, a CRC32.

All integers are little-endian. Layout (format version 1)::

    offset size  field
    0      4     magic b"\\x89LLC" (a high first byte, as PNG's, catches 7-bit transfers)
    4      1     format version (1)
    5      1     C, image channels the model codes (1 grey, 3 RGB)
    6      2+2   tile height, width in pixels: the tokenizer's training resolution
    10     2+2   token grid height, width of one tile (h, w)
    14     4     V, vocabulary (codebook) size
    18     2     chunk: tiles per batch of the prior (encoder and decoder batch alike)
    20     8     model fingerprint (sha256 of the tokenizer's and prior's configs and weights)
    28     4     number of images
    32     4     length of the image table in bytes
    36     4     payload length in bytes (a multiple of 4: the range coder's 32-bit words)
    40     4     CRC32 of every token index (uint32 LE, tile by tile, raster order): checks
                 the decoded tokens, so a prior that computes differently here is caught
    44     ...   image table, one entry per image (below)
    ...    ...   payload
    end-4  4     CRC32 of every byte before it

Image table entry: height u16, width u16 (the original size), rows u16, cols u16 (its tile
grid: rows = ceil(height / tile height), cols likewise), name length u8, name (ASCII, a
sanitised file stem; empty = index-based name). When all images have one size and no names,
the table holds that one entry for all of them. A file of one unnamed image spends
44 + 9 + 4 = 57 bytes besides its payload; a file of many same-size images shares those 57.

`unpack` validates in an order that gives the most useful message: foreign file (magic),
version, truncation, damage (CRC), then every field against fixed bounds before anything is
allocated. Every rejection is a `CodecError`: one line, never another exception type.
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from dataclasses import dataclass

from latentlab.errors import UserError

MAGIC = b"\x89LLC"
VERSION = 1
FIXED = struct.Struct("<4sBBHHHHIH8sIIII")
ENTRY = struct.Struct("<HHHHB")
CRC = struct.Struct("<I")
FINGERPRINT_BYTES = 8

# bounds checked before anything is allocated, so a crafted header cannot ask for terabytes
MAX_SIDE = 16384
"""Largest image side in pixels."""
MAX_IMAGES = 1 << 20
MAX_TILES = 1 << 22
"""Tiles of one file: decoding time is linear in it, so it is bounded too."""
MAX_NAME = 120
NAME_OK = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


class CodecError(UserError):
    """A codec file that cannot be decoded: foreign, truncated, damaged, or made by another
    model. One line; `latentlab decompress` prints it and exits with status 2."""


@dataclass(frozen=True)
class ImageEntry:
    """One image of a file: its original size, its tile grid and its name."""

    height: int
    width: int
    rows: int
    cols: int
    name: str = ""

    @property
    def tiles(self) -> int:
        return self.rows * self.cols


@dataclass(frozen=True)
class Header:
    """Everything a file says besides its payload.

    Attributes:
        channels: C of the images.
        tile: (height, width) in pixels of one tile.
        grid: (h, w) tokens of one tile.
        vocab: V, token indices are < V.
        chunk: tiles per prior batch; the decoder must batch exactly as the encoder did.
        fingerprint: the model's identity, FINGERPRINT_BYTES bytes.
        images: one entry per image, in order.
        tokens_crc: CRC32 of the token indices.
    """

    channels: int
    tile: tuple[int, int]
    grid: tuple[int, int]
    vocab: int
    chunk: int
    fingerprint: bytes
    images: tuple[ImageEntry, ...]
    tokens_crc: int

    @property
    def tiles(self) -> int:
        return sum(e.tiles for e in self.images)

    @property
    def tokens_per_tile(self) -> int:
        return self.grid[0] * self.grid[1]


def tile_grid(height: int, width: int, tile: tuple[int, int]) -> tuple[int, int]:
    """(rows, cols) of tiles covering an image, the last row and column padded."""
    return math.ceil(height / tile[0]), math.ceil(width / tile[1])


def header_size(header: Header) -> int:
    """Bytes of a file that are not payload: fixed header, image table and CRC."""
    return FIXED.size + _table_size(header.images) + CRC.size


def _table_entries(images: tuple[ImageEntry, ...]) -> tuple[ImageEntry, ...]:
    """The entries a file stores: one for all when all images share a size and have no name."""
    shared = images[0]
    return (shared,) if not shared.name and all(e == shared for e in images) else images


def _table_size(images: tuple[ImageEntry, ...]) -> int:
    return sum(ENTRY.size + len(e.name.encode()) for e in _table_entries(images))


def pack(header: Header, payload: bytes) -> bytes:
    """The file holding `header` and `payload` (bytes of 32-bit words)."""
    _check(header)
    assert len(payload) % 4 == 0, f"payload must be whole 32-bit words, got {len(payload)} bytes"
    table = b"".join(ENTRY.pack(e.height, e.width, e.rows, e.cols, len(e.name.encode()))
                     + e.name.encode() for e in _table_entries(header.images))
    fixed = FIXED.pack(MAGIC, VERSION, header.channels, *header.tile, *header.grid, header.vocab,
                       header.chunk, header.fingerprint, len(header.images),
                       len(table), len(payload), header.tokens_crc)
    body = fixed + table + payload
    return body + CRC.pack(zlib.crc32(body))


def unpack(data: bytes, where: str = "file") -> tuple[Header, bytes]:
    """Parse and validate a file; returns its header and payload or raises CodecError."""
    if len(data) < len(MAGIC) and MAGIC.startswith(data):
        raise CodecError(f"{where}: truncated ({len(data)} bytes)")
    if data[:len(MAGIC)] != MAGIC:
        raise CodecError(f"{where}: not a latentlab codec file (no {MAGIC!r} magic)")
    if len(data) < FIXED.size + CRC.size:
        raise CodecError(f"{where}: truncated ({len(data)} bytes, shorter than the "
                         f"{FIXED.size + CRC.size}-byte header)")
    (_, version, channels, tile_h, tile_w, grid_h, grid_w, vocab, chunk, fingerprint, count,
     table_len, payload_len, tokens_crc) = FIXED.unpack_from(data)
    if version != VERSION:
        raise CodecError(f"{where}: format version {version}; this latentlab reads version "
                         f"{VERSION}")
    expected = FIXED.size + table_len + payload_len + CRC.size
    if len(data) < expected:
        raise CodecError(f"{where}: truncated ({len(data)} bytes, the header says {expected})")
    if len(data) > expected:
        raise CodecError(f"{where}: {len(data) - expected} unexpected bytes after the end "
                         f"({expected} bytes)")
    (stored,) = CRC.unpack_from(data, expected - CRC.size)
    if zlib.crc32(data[:expected - CRC.size]) != stored:
        raise CodecError(f"{where}: damaged (CRC32 mismatch)")
    table = data[FIXED.size:FIXED.size + table_len]
    header = Header(channels, (tile_h, tile_w), (grid_h, grid_w), vocab, chunk, fingerprint,
                    _read_table(table, count, (tile_h, tile_w), where), tokens_crc)
    try:
        _check(header)
    except ValueError as e:
        raise CodecError(f"{where}: invalid header: {e}") from None
    if payload_len % 4:
        raise CodecError(f"{where}: invalid header: payload of {payload_len} bytes is not "
                         "whole 32-bit words")
    return header, data[FIXED.size + table_len:expected - CRC.size]


def _read_table(table: bytes, count: int, tile: tuple[int, int],
                where: str) -> tuple[ImageEntry, ...]:
    if not 1 <= count <= MAX_IMAGES:
        raise CodecError(f"{where}: invalid header: {count} images (1..{MAX_IMAGES})")
    if min(tile) < 1:
        raise CodecError(f"{where}: invalid header: tile {tile}")
    entries, offset = [], 0
    for i in range(count):
        if i == 1 and offset == len(table) and not entries[0].name:
            return (entries[0],) * count  # one entry shared by all images
        if offset + ENTRY.size > len(table):
            raise CodecError(f"{where}: invalid header: the image table ends at image {i} of "
                             f"{count}")
        height, width, rows, cols, name_len = ENTRY.unpack_from(table, offset)
        offset += ENTRY.size
        raw = table[offset:offset + name_len]
        offset += name_len
        if len(raw) != name_len:
            raise CodecError(f"{where}: invalid header: the image table ends inside image {i}")
        name = raw.decode("ascii", "replace")  # a non-ASCII name then fails NAME_OK
        entries.append(ImageEntry(height, width, rows, cols, name))
    if offset != len(table):
        raise CodecError(f"{where}: invalid header: {len(table) - offset} bytes left in the "
                         "image table")
    return tuple(entries)


def _check(header: Header) -> None:
    """Raise ValueError naming the first field outside its bounds."""
    if header.channels not in (1, 3):
        raise ValueError(f"channels is {header.channels} (1 or 3)")
    if not all(1 <= s <= MAX_SIDE for s in header.tile):
        raise ValueError(f"tile is {header.tile} (sides 1..{MAX_SIDE})")
    if not all(1 <= g <= t and t % g == 0 for g, t in zip(header.grid, header.tile, strict=True)):
        raise ValueError(f"token grid {header.grid} does not divide tile {header.tile}")
    if not 2 <= header.vocab <= 1 << 16:
        raise ValueError(f"vocabulary is {header.vocab} (2..65536)")
    if not 1 <= header.chunk <= 1 << 15:
        raise ValueError(f"chunk is {header.chunk} (1..32768)")
    if len(header.fingerprint) != FINGERPRINT_BYTES:
        raise ValueError(f"fingerprint is {len(header.fingerprint)} bytes")
    if not 1 <= len(header.images) <= MAX_IMAGES:
        raise ValueError(f"{len(header.images)} images (1..{MAX_IMAGES})")
    names = set()
    for i, e in enumerate(header.images):
        if not (1 <= e.height <= MAX_SIDE and 1 <= e.width <= MAX_SIDE):
            raise ValueError(f"image {i} is {e.height}x{e.width} (sides 1..{MAX_SIDE})")
        if (e.rows, e.cols) != tile_grid(e.height, e.width, header.tile):
            raise ValueError(f"image {i} ({e.height}x{e.width}) has a tile grid of "
                             f"{e.rows}x{e.cols}, not {tile_grid(e.height, e.width, header.tile)}")
        if e.name and (len(e.name.encode()) > MAX_NAME or not NAME_OK.fullmatch(e.name)):
            raise ValueError(f"image {i} has the unsafe name {e.name[:40]!r}")
        if e.name in names:
            raise ValueError(f"image {i} repeats the name {e.name!r}")
        if e.name:
            names.add(e.name)
    if header.tiles > MAX_TILES:
        raise ValueError(f"{header.tiles} tiles (at most {MAX_TILES})")
