"""Decomposers (tokenizers): encoders, decoders and the bottlenecks between them."""

from latentlab.tokenizers.tokenizer import Reconstruction, Tokenizer, TokenizerConfig

__all__ = ["Reconstruction", "Tokenizer", "TokenizerConfig"]
