"""Which items each process reads at each step: a pure function of (seed, step), so a resumed
run reads exactly what an uninterrupted one would, on any number of processes."""

from __future__ import annotations

from collections.abc import Iterator

import torch


class StepSampler:
    """Infinite batch sampler over a dataset of `n` items, for DataLoader's `batch_sampler`.

    The data is an endless stream of epochs, each a fresh permutation seeded by (seed, epoch).
    Optimizer step s consumes stream positions [s * B, (s + 1) * B) with B the global batch;
    those are cut into `accumulate` micro-batches, each split across the `world` ranks. Hence the
    global batch at step s is the same whatever the world size or accumulation.
    """

    def __init__(self, n: int, batch_size: int, accumulate: int, rank: int, world: int,
                 seed: int, start_step: int = 0):
        assert n > 0, "empty dataset"
        per = batch_size // (accumulate * world)
        assert per * accumulate * world == batch_size, (
            f"batch_size {batch_size} must be divisible by accumulate*world "
            f"({accumulate}*{world})")
        self.n, self.batch, self.per, self.accumulate = n, batch_size, per, accumulate
        self.rank, self.world, self.seed, self.start_step = rank, world, seed, start_step
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.int64)

    def _at(self, positions: torch.Tensor) -> list[int]:
        out = []
        for p in positions.tolist():
            epoch, offset = divmod(p, self.n)
            if epoch != self._epoch:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
            out.append(int(self._perm[offset]))
        return out

    def micro_batch(self, step: int, micro: int) -> list[int]:
        """Indices this rank reads for micro-batch `micro` of optimizer step `step`."""
        start = step * self.batch + (micro * self.world + self.rank) * self.per
        return self._at(torch.arange(start, start + self.per))

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while True:
            for micro in range(self.accumulate):
                yield self.micro_batch(step, micro)
            step += 1
