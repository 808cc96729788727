"""The codec end to end on a tiny model: exact token round trips, the tokenizer's own
reconstruction, payload = -log2 P, refusals. The round trip holds for any weights, so the model
is randomly initialised (its prior made deliberately peaked, so rare tokens get coded too)."""

from __future__ import annotations

import functools
import math
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from latentlab import pixels
from latentlab.codec import CodecError, CodecModel, compress, decompress
from latentlab.codec.codec import detokenize
from latentlab.codec.images import read_image
from latentlab.codec.model import model_fingerprint
from latentlab.codec.tiles import from_tiles, to_tiles
from latentlab.data import load_dataset
from latentlab.errors import CheckpointError, DataError
from latentlab.generation.config import GeneratorConfig
from latentlab.generation.models import Modelled, build_models
from latentlab.generators.autoregressive import ARConfig
from latentlab.tokenizers.bottlenecks.fsq import FSQConfig
from latentlab.tokenizers.conv import ConvConfig
from latentlab.tokenizers.tokenizer import Tokenizer, TokenizerConfig

GRID, VOCAB = (4, 4), 32
PRIOR = GeneratorConfig(family="ar", network=ARConfig(width=32, depth=1, heads=2))
WHAT = Modelled(GRID, "indices", 0, VOCAB)


def tiny_parts(channels: int = 1, seed: int = 0) -> tuple[Tokenizer, nn.Module]:
    """An FSQ tokenizer (factor 2, 32 codes: 8x8 tiles of 4x4 tokens) and an unconditional
    prior built as `train-generator` builds one."""
    torch.manual_seed(seed)
    cfg = TokenizerConfig(latent_channels=3, arch=ConvConfig(channels=8, ch_mult=(1, 2)),
                          bottleneck=FSQConfig(levels=(4, 4, 2)))
    prior = build_models(PRIOR, WHAT)["model"]
    nn.init.normal_(prior.head.weight, std=0.5)  # peaked, varied distributions
    return Tokenizer(cfg, channels), prior


def tiny_model(channels: int = 1, seed: int = 0) -> CodecModel:
    return CodecModel(*tiny_parts(channels, seed), GRID)


@functools.cache
def _digits() -> np.ndarray:
    data = load_dataset("digits", "test")
    return pixels.to_hwc_uint8(data.__getitems__(list(range(len(data)))).x)


def digits(n: int | None = None) -> list[np.ndarray]:
    """Test-split digits as (8, 8, 1) uint8 images (the first n)."""
    return list(_digits()[:n])


@pytest.fixture(scope="module")
def model() -> CodecModel:
    return tiny_model()


def reconstruction(model: CodecModel, image: np.ndarray) -> np.ndarray:
    """The tokenizer's own reconstruction of one image, tiled as the codec tiles it."""
    tiles = to_tiles(image, model.tile)
    with torch.no_grad():
        indices = model.tokenizer.encode(pixels.from_uint8(torch.from_numpy(tiles))).indices
    return from_tiles(detokenize(model, indices), *image.shape[:2])


def test_round_trip_gives_the_same_tokens_and_the_tokenizers_reconstruction(model):
    rng = np.random.default_rng(0)
    images = digits(20) + [rng.integers(0, 256, (13, 21, 1), dtype=np.uint8),
                           rng.integers(0, 256, (1, 30, 1), dtype=np.uint8)]
    names = [f"im{i}" for i in range(len(images))]
    encoded = compress(model, images, names, chunk=7)  # 7: chunks cut across images
    decoded = decompress(model, encoded.data)
    assert torch.equal(decoded.tokens, encoded.tokens)
    assert decoded.tokens.shape == (20 + 6 + 4, *GRID)
    assert decoded.names == names
    for image, out in zip(images, decoded.images, strict=True):
        assert out.shape == image.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out, reconstruction(model, image))
    assert not all(np.array_equal(a, b) for a, b in zip(images, decoded.images, strict=True))


def test_payload_length_is_minus_log2_p_of_the_tokens(model):
    images = digits()  # 360 images, 5760 tokens
    encoded = compress(model, images)
    tokens = encoded.tokens.reshape(len(encoded.tokens), -1)  # (T, N)
    with torch.no_grad():  # the batched path, independent of the codec's incremental one
        nll_bits = -float(model.prior.log_prob(tokens).double().sum()) / math.log(2)
    assert nll_bits > 10_000
    payload_bits = 8 * encoded.payload_bytes
    assert abs(payload_bits - nll_bits) <= 0.01 * nll_bits, (payload_bits, nll_bits)
    assert abs(encoded.bits - nll_bits) <= 0.001 * nll_bits  # the integer tables lose ~nothing
    assert encoded.header_bytes == 57  # one shared table entry: 360 same-size, unnamed images
    assert len(encoded.data) == encoded.header_bytes + encoded.payload_bytes


def test_compress_is_deterministic_and_leaves_the_model_untouched(model):
    images = digits(30)
    before = model.fingerprint
    first, second = compress(model, images).data, compress(model, images).data
    assert first == second
    assert model_fingerprint(model.tokenizer, model.prior) == before


def test_a_file_from_another_model_is_refused_naming_both_fingerprints(model):
    other = tiny_model(seed=1)
    data = compress(model, digits(3)).data
    with pytest.raises(CodecError, match=f"made with model {model.fingerprint_hex}, but this "
                                         f"model is {other.fingerprint_hex}"):
        decompress(other, data)


def test_a_prior_that_computes_differently_is_caught_not_returned():
    """As a decoder on another platform would: same fingerprint, slightly other logits."""
    model, shifted = tiny_model(), tiny_model()
    data = compress(model, digits(10)).data
    with torch.no_grad():
        shifted.prior.head.bias.add_(1e-4 * torch.randn(VOCAB))
    shifted.fingerprint = model.fingerprint
    with pytest.raises(CodecError, match="computed other probabilities here"):
        decompress(shifted, data)


def test_a_header_claiming_more_tokens_than_its_payload_holds_is_refused_at_once(model):
    data = bytearray(compress(model, digits(2)).data)
    struct.pack_into("<I", data, 28, 1 << 20)  # a million images sharing the one table entry
    data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
    with pytest.raises(CodecError, match="cannot fit in a payload"):
        decompress(model, bytes(data))


def test_rgb_model_round_trip():
    model = tiny_model(channels=3)
    image = np.random.default_rng(0).integers(0, 256, (17, 9, 3), dtype=np.uint8)
    encoded = compress(model, [image])
    decoded = decompress(model, encoded.data)
    assert torch.equal(decoded.tokens, encoded.tokens)
    np.testing.assert_array_equal(decoded.images[0], reconstruction(model, image))
    with pytest.raises(CodecError, match=r"expected \(H, W, 3\) uint8"):
        compress(model, [image[..., :1]])


def test_channel_policy_of_image_files(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    colour = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(colour).save(tmp_path / "colour.png")
    Image.fromarray(np.repeat(grey[..., None], 3, 2)).save(tmp_path / "grey-rgb.png")
    opaque = np.concatenate([colour, np.full((5, 7, 1), 255, np.uint8)], axis=2)
    Image.fromarray(opaque).save(tmp_path / "opaque.png")
    Image.fromarray(np.where(np.arange(4) < 3, opaque, 7).astype(np.uint8)).save(
        tmp_path / "clear.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20))

    np.testing.assert_array_equal(read_image(tmp_path / "grey.png", 3),
                                  np.repeat(grey[..., None], 3, 2))
    np.testing.assert_array_equal(read_image(tmp_path / "grey-rgb.png", 1), grey[..., None])
    np.testing.assert_array_equal(read_image(tmp_path / "opaque.png", 3), colour)
    with pytest.raises(CodecError, match="colour image, but the model codes grey"):
        read_image(tmp_path / "colour.png", 1)
    with pytest.raises(CodecError, match="transparency"):
        read_image(tmp_path / "clear.png", 3)
    with pytest.raises(DataError, match="broken.png: cannot decode image"):
        read_image(tmp_path / "broken.png", 1)


def test_model_parts_must_fit():
    tokenizer, prior = tiny_parts()
    with pytest.raises(CheckpointError, match="not the 8 of a 2x4 grid"):
        CodecModel(tokenizer, prior, (2, 4))
    continuous = Tokenizer(TokenizerConfig(latent_channels=2, arch=ConvConfig(channels=8)), 1)
    with pytest.raises(CheckpointError, match="needs a discrete image tokenizer"):
        CodecModel(continuous, prior, GRID)
