"""Two gloo processes with different data and different seeds end with the same bottleneck state:
the VQ codebook (k-means init, EMA, restarts) and the identity's running statistics."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from latentlab.tokenizers.bottlenecks import (
    IdentityBottleneck,
    IdentityConfig,
    VectorQuantizer,
    VQConfig,
)

WORLD, STEPS, C = 2, 6, 3


def rank_batch(rank: int, step: int) -> torch.Tensor:
    """(16, C, 2, 2): each rank its own data, centred at `rank` with std rank + 1."""
    g = torch.Generator().manual_seed(1000 * rank + step)
    return torch.randn(16, C, 2, 2, generator=g) * (rank + 1) + rank


def worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD)
    try:
        torch.manual_seed(rank)  # different random inits and restart draws on each rank
        modules = {
            "kmeans": VectorQuantizer(C, VQConfig(codebook_size=16)),
            # random init, codebook loss: many early restarts (from rank 0's batch)
            "random": VectorQuantizer(C, VQConfig(codebook_size=16, kmeans_init=False,
                                                  update="loss")),
            "norm": IdentityBottleneck(C, IdentityConfig(normalize=True)),
        }
        restarts = {name: 0.0 for name in modules}
        for step in range(STEPS):
            z = rank_batch(rank, step)
            for name, module in modules.items():
                restarts[name] += module.train()(z).stats.get("dead_codes", torch.tensor(0.0))
        state = {f"{name}.{k}": v for name, module in modules.items()
                 for k, v in module.state_dict().items()}
        state |= {f"restarts.{name}": torch.as_tensor(n) for name, n in restarts.items()}
        save_file({k: v.contiguous() for k, v in state.items()}, f"{out_dir}/rank{rank}.st")
        dist.barrier()  # no peer still sending before teardown (gloo exit race)
    finally:
        dist.destroy_process_group()


def test_ranks_with_different_data_hold_identical_state(tmp_path):
    mp.spawn(worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    states = [load_file(tmp_path / f"rank{r}.st") for r in range(WORLD)]
    assert states[0]["restarts.random"] > 0  # restarts did happen, and must have been synced
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    # the running statistics describe the union of both ranks' batches
    union = torch.cat([rank_batch(r, s) for r in range(WORLD) for s in range(STEPS)])
    torch.testing.assert_close(states[0]["norm.running_mean"], union.mean(dim=(0, 2, 3)),
                               rtol=0, atol=1e-5)
