"""Images <-> bytes: tokenize, range-code the tokens with the prior's probabilities, and back.

    compress:    images -> tiles (tiles.py) -> tokenizer indices (T, h, w)
                 -> for each chunk of tiles, token by token in raster order: the prior's
                    probabilities -> integer tables (entropy.py) -> range coder
                 -> container (container.py)
    decompress:  container -> the same loop, decoding each token before feeding it back
                 -> tokenizer.decode -> tiles -> images

**Determinism.** The decoder must rebuild exactly the tables the encoder used, so both take
the prior through one function, `_code_tokens`, on the same path: the incremental
`ARTransformer.next_token_logits` with its KV cache (the batched `log_prob` agrees only to
rounding), unconditional (the start token; a codec does not know the label), fp32 with
autocast off, on the CPU, one thread (so the result cannot depend on how a reduction is split
between threads), with the same batches of tiles (the file records the chunk size: the rows a
matrix product sees can change its rounding). The fp32 softmax is then quantised in float64
numpy arithmetic, which is exact. What remains is the platform: another torch version or
another CPU kernel set (AVX2 vs AVX512, see `torch.backends.cpu.get_cpu_capability()`) may
compute different fp32 logits. The file carries a CRC32 of its tokens, so a decode that went
wrong that way is reported as such, never returned as a wrong image.

Legend: T tiles, N tokens per tile (h * w), V vocabulary, C channels, H W image size.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from latentlab import pixels
from latentlab.codec.container import (
    MAX_SIDE,
    MAX_TILES,
    CodecError,
    Header,
    ImageEntry,
    header_size,
    pack,
    tile_grid,
    unpack,
)
from latentlab.codec.entropy import (
    CODER_SLACK_BITS,
    MIN_TOKEN_BITS,
    TokenDecoder,
    TokenEncoder,
    code_length,
    quantize,
)
from latentlab.codec.model import CodecModel
from latentlab.codec.tiles import from_tiles, to_tiles

CHUNK = 64
"""Tiles per batch of the prior: larger batches amortise Python overhead; the file records it."""
TOKENIZER_BATCH = 256
"""Tiles per tokenizer call, to bound memory on large images."""


@dataclass(frozen=True)
class Encoded:
    """What `compress` made.

    Attributes:
        data: the file.
        tokens: (T, h, w) int64, the token indices coded.
        bits: their ideal code length under the coded integer tables, sum of -log2 P.
        header_bytes: bytes of `data` that are not payload (header, image table, CRC).
    """

    data: bytes
    tokens: torch.Tensor
    bits: float
    header_bytes: int

    @property
    def payload_bytes(self) -> int:
        return len(self.data) - self.header_bytes


@dataclass(frozen=True)
class Decoded:
    """What `decompress` made: images (H, W, C) uint8, their names ('' = none recorded) and
    the decoded token indices (T, h, w) int64."""

    images: list[np.ndarray]
    names: list[str]
    tokens: torch.Tensor


def platform() -> str:
    """What the prior's arithmetic depends on besides the model: torch build and CPU kernels."""
    return f"torch {torch.__version__} {torch.backends.cpu.get_cpu_capability()}"


@contextlib.contextmanager
def prior_numerics() -> Iterator[None]:
    """No grad, fp32 (autocast off), one CPU thread: see the module docstring."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            yield
    finally:
        torch.set_num_threads(threads)


def _code_tokens(model: CodecModel, tiles: int, chunk: int,
                 step: Callable[[int, int, np.ndarray], np.ndarray]) -> torch.Tensor:
    """The one loop encoder and decoder share: for each chunk of tiles and each position i,
    the prior's integer tables (B, V) given the tokens so far, handed to `step(start, i,
    counts)`, which codes the tokens of that position and returns them (B,) int64.

    Returns:
        (T, N) int64, every token `step` returned.
    """
    n = model.prior.seq_len
    done = []
    with prior_numerics():
        for start in range(0, tiles, chunk):
            b = min(chunk, tiles - start)
            prefix = torch.empty(b, 0, dtype=torch.int64)  # (B, i)
            cache = None
            for i in range(n):
                logits, cache = model.prior.next_token_logits(prefix, None, cache)  # (B, V)
                counts = quantize(torch.softmax(logits.float(), dim=-1).numpy())
                symbols = torch.from_numpy(step(start, i, counts))
                prefix = torch.cat([prefix, symbols[:, None]], dim=1)
            done.append(prefix)
    return torch.cat(done)


def tokens_crc(tokens: torch.Tensor) -> int:
    """CRC32 of token indices as little-endian uint32, in raster order."""
    return zlib.crc32(tokens.reshape(-1).numpy().astype("<u4").tobytes())


@torch.no_grad()
def tokenize(model: CodecModel, tiles: np.ndarray) -> torch.Tensor:
    """(T, C, th, tw) uint8 tiles -> (T, h, w) int64 token indices."""
    device = model.tokenizer.latent_shift.device
    parts = []
    for start in range(0, len(tiles), TOKENIZER_BATCH):
        x = pixels.from_uint8(torch.from_numpy(tiles[start:start + TOKENIZER_BATCH]))
        parts.append(model.tokenizer.encode(x.to(device)).indices.to("cpu", torch.int64))
    return torch.cat(parts)


@torch.no_grad()
def detokenize(model: CodecModel, tokens: torch.Tensor) -> np.ndarray:
    """(T, h, w) int64 token indices -> (T, C, th, tw) uint8 tiles, the tokenizer's
    reconstruction."""
    device = model.tokenizer.latent_shift.device
    x = model.tokenizer.decode(tokens.to(device), batch_size=TOKENIZER_BATCH)
    return pixels.to_uint8(x.float()).cpu().numpy()


def _check_images(model: CodecModel, images: Sequence[np.ndarray]) -> None:
    if not images:
        raise CodecError("no images to compress")
    for i, image in enumerate(images):
        if image.ndim != 3 or image.dtype != np.uint8 or image.shape[2] != model.channels:
            raise CodecError(f"image {i}: expected (H, W, {model.channels}) uint8, got "
                             f"{image.dtype} {tuple(image.shape)}")
        if not (1 <= image.shape[0] <= MAX_SIDE and 1 <= image.shape[1] <= MAX_SIDE):
            raise CodecError(f"image {i}: {image.shape[0]}x{image.shape[1]} pixels; sides must "
                             f"be 1..{MAX_SIDE}")


def compress(model: CodecModel, images: Sequence[np.ndarray], names: Sequence[str] | None = None,
             chunk: int = CHUNK) -> Encoded:
    """Code images into one file.

    Args:
        model: the codec's tokenizer and prior.
        images: each (H, W, C) uint8 with C = model.channels, any size (tiled, see tiles.py).
        names: a safe name per image (`images.names_for`), or None to record none.
        chunk: tiles per prior batch.

    Returns:
        The file, the tokens coded and their ideal code length.
    """
    _check_images(model, images)
    names = list(names) if names is not None else [""] * len(images)
    entries = tuple(ImageEntry(im.shape[0], im.shape[1], *tile_grid(*im.shape[:2], model.tile),
                               name) for im, name in zip(images, names, strict=True))
    tiles = sum(e.tiles for e in entries)
    if tiles > MAX_TILES:
        raise CodecError(f"{tiles} tiles of {model.tile[0]}x{model.tile[1]} pixels; one file "
                         f"holds at most {MAX_TILES}: split the images over several files")
    tokens = tokenize(model, np.concatenate([to_tiles(im, model.tile) for im in images]))
    flat = tokens.reshape(len(tokens), -1)  # (T, N)
    chunk = max(1, min(chunk, tiles))
    encoder, bits = TokenEncoder(), 0.0

    def encode(start: int, i: int, counts: np.ndarray) -> np.ndarray:
        nonlocal bits
        symbols = flat[start:start + len(counts), i].numpy()
        encoder.encode(symbols, counts)
        bits += code_length(counts, symbols)
        return symbols

    _code_tokens(model, tiles, chunk, encode)
    header = Header(model.channels, model.tile, model.grid, model.vocab, chunk,
                    model.fingerprint, entries, tokens_crc(tokens))
    try:
        data = pack(header, encoder.finish())
    except ValueError as e:  # a name or size outside the format's bounds
        raise CodecError(f"cannot write this file: {e}") from None
    return Encoded(data, tokens, bits, header_size(header))


def read_header(model: CodecModel, data: bytes, where: str = "file") -> tuple[Header, bytes]:
    """Unpack a file and check it was made by `model`; CodecError otherwise."""
    header, payload = unpack(data, where)
    if header.fingerprint != model.fingerprint:
        raise CodecError(f"{where}: made with model {header.fingerprint.hex()}, but this model "
                         f"is {model.fingerprint_hex}; decode it with the model that made it")
    found = (header.channels, header.tile, header.grid, header.vocab)
    wanted = (model.channels, model.tile, model.grid, model.vocab)
    if found != wanted:
        raise CodecError(f"{where}: invalid header: (channels, tile, grid, vocabulary) {found} "
                         f"do not match its model's {wanted}")
    tokens = header.tiles * header.tokens_per_tile
    if tokens * MIN_TOKEN_BITS > 8 * len(payload) + CODER_SLACK_BITS:
        raise CodecError(f"{where}: invalid header: {tokens} tokens cannot fit in a payload of "
                         f"{len(payload)} bytes")
    return header, payload


def decompress(model: CodecModel, data: bytes, where: str = "file") -> Decoded:
    """Decode a file made by `compress` with the same model.

    Raises:
        CodecError: one line, for a foreign, truncated, damaged or mismatched file, or a decode
            whose tokens fail their checksum (never another exception, never a wrong image).
    """
    header, payload = read_header(model, data, where)
    decoder = TokenDecoder(payload)
    vocab = header.vocab

    def decode(start: int, i: int, counts: np.ndarray) -> np.ndarray:
        symbols = decoder.decode(counts)
        assert ((symbols >= 0) & (symbols < vocab)).all()  # the tables have V entries
        return symbols

    # the file passed its CRC, so a failure from here on means the tables differ from the
    # encoder's: another platform's arithmetic (or a crafted file)
    try:
        flat = _code_tokens(model, header.tiles, header.chunk, decode)  # (T, N)
        decoder.finish()
        if tokens_crc(flat) != header.tokens_crc:
            raise ValueError("the decoded tokens fail their checksum")
    except ValueError as e:
        raise CodecError(f"{where}: {e}: the prior computed other probabilities here than where "
                         f"the file was made ({platform()} here; the same torch version and CPU "
                         "kernels are needed, see docs/codec.md)") from None
    tokens = flat.reshape(len(flat), *model.tokens)  # (T, h, w), or hvq's (T, N)
    tiles = detokenize(model, tokens)  # (T, C, th, tw)
    images, start = [], 0
    for e in header.images:
        images.append(from_tiles(tiles[start:start + e.tiles], e.height, e.width))
        start += e.tiles
    return Decoded(images, [e.name for e in header.images], tokens)
