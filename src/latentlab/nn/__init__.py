"""Building blocks shared by tokenizers and generators."""

import torch
from torch import nn


def num_parameters(module: nn.Module) -> int:
    """Parameters of `module` (buffers such as fixed positional embeddings excluded); the N of
    the scaling-law fits and the size every run reports."""
    return sum(p.numel() for p in module.parameters())


def hash_tensors(h, tensors: dict[str, torch.Tensor]) -> None:
    """Feed every tensor of a state dict to the hashlib object `h`, in name order: its name,
    dtype, shape and bytes, so that equal hashes mean bit-identical weights."""
    for name, tensor in sorted(tensors.items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
