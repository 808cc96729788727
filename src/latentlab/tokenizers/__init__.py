"""Decomposers (tokenizers): encoders, decoders and the bottlenecks between them."""

from latentlab.tokenizers.autoencoder import Autoencoder, AutoencoderConfig

__all__ = ["Autoencoder", "AutoencoderConfig"]
