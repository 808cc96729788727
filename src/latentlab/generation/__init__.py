"""The pipeline after the tokenizer: latent caches, generator training and sampling.

Layer 2: it joins tokenizers, generators, data and the training loop, which do not know of each
other.
"""
