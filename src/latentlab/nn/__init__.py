"""Building blocks shared by tokenizers and generators."""

from torch import nn


def num_parameters(module: nn.Module) -> int:
    """Parameters of `module` (buffers such as fixed positional embeddings excluded); the N of
    the scaling-law fits and the size every run reports."""
    return sum(p.numel() for p in module.parameters())
