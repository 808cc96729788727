"""The pipeline after the tokenizer: latent caches, generator training and sampling.

Layer 4 of docs/architecture.md: it joins tokenizers, generators, data and the training loop,
which do not know of each other.
"""
