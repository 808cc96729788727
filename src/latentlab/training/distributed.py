"""torch.distributed set-up for runs under `torchrun`: gloo on CPU, NCCL on GPU.

A plain `python` run is a world of one and never touches torch.distributed. Under torchrun the
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, ...) says where this process stands.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """Where this process stands: its rank among `size` processes and its device."""

    rank: int
    size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' -> this process's GPU when CUDA is present, else the CPU."""
    if name == "auto":
        name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    elif name == "cuda":
        name = f"cuda:{local_rank}"
    return torch.device(name)


def setup(device: str = "auto") -> World:
    """Join the process group torchrun describes (idempotent); a world of one otherwise."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                                device_id=dev if dev.type == "cuda" else None)
    return World(rank, size, local_rank, dev)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group cleanly.

    Multi-process gloo runs can abort at interpreter exit after finishing (a teardown race in
    torch/gloo): a barrier first, so no peer is still sending, then destroy the group.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def mean_over_ranks(values: dict[str, float], world: World) -> dict[str, float]:
    """Average scalar logs across processes (a no-op for a world of one)."""
    if not world.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=world.device)
    dist.all_reduce(t)
    return {k: v / world.size for k, v in zip(keys, t.tolist(), strict=True)}


def any_rank(flag: bool, world: World) -> bool:
    """True on every process if `flag` is true on any (so all ranks stop together)."""
    if not world.distributed:
        return flag
    t = torch.tensor([float(flag)], device=world.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def replicas_identical(params: list[torch.Tensor], world: World) -> bool:
    """Whether every rank holds bitwise the same tensors (compared by a checksum)."""
    if not world.distributed:
        return True
    flat = torch.cat([p.detach().flatten().double() for p in params])
    # two weighted sums catch permutations and sign flips a plain sum would miss
    weights = torch.linspace(1, 2, len(flat), dtype=torch.float64, device=flat.device)
    local = torch.stack([flat.sum(), (flat * weights).sum()])
    gathered = [torch.empty_like(local) for _ in range(world.size)]
    dist.all_gather(gathered, local)
    return all(torch.equal(g, gathered[0]) for g in gathered)
