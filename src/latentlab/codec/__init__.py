"""The codec: a discrete tokenizer and an autoregressive prior turned into an image codec
(generation is compression). Tokens are range-coded with the prior's probabilities, so a file
costs about -log2 P(tokens) bits plus a small header. See docs/codec.md.

    model = CodecModel.load("runs/codec")               # made by `latentlab train-codec`
    encoded = compress(model, images)                   # images: (H, W, C) uint8 arrays
    decoded = decompress(model, encoded.data)           # decoded.images
"""

from latentlab.codec.codec import Decoded, Encoded, compress, decompress
from latentlab.codec.container import CodecError, Header, ImageEntry
from latentlab.codec.model import CodecModel

__all__ = ["CodecError", "CodecModel", "Decoded", "Encoded", "Header", "ImageEntry", "compress",
           "decompress"]
