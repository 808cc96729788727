"""Keeping bottleneck state identical across processes under torch.distributed.

Bottlenecks with running state (normalisation statistics, codebook EMAs, k-means init, dead-code
restarts) call these in training mode only. Every rank runs the same training forward passes
(DDP's contract), so every rank reaches the same collectives in the same order; eval may run on
one rank alone and never syncs. In a world of one (or without torch.distributed) they do nothing.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def distributed() -> bool:
    """True when a process group of more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum_(t: torch.Tensor) -> torch.Tensor:
    """Sum `t` over ranks in place (every rank gets the same result); returns `t`."""
    if distributed():
        dist.all_reduce(t)
    return t


def broadcast_(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite `t` in place with rank `src`'s copy; returns `t`. `t` must be contiguous."""
    if distributed():
        dist.broadcast(t, src)
    return t
