"""Moving averages of the tiny generators' losses and the scaling fits made from them.

A coupled recipe tracks S loss series per tiny generator (one per t-bin for a continuous
process; cross-entropy and error rate for tokens). Per-item losses are summed into `pending`
during a step and folded into bias-corrected exponential moving averages at the start of the
next, after an all-reduce, so every rank holds the same averages and fits. Everything is a
buffer: a resumed run folds and fits exactly where the original did.

Legend: K tiny generators, S series.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from latentlab.recipes.scaling import IllPosedFit, PowerLaw, fit_power_law
from latentlab.tokenizers.bottlenecks.sync import all_reduce_sum_, distributed

log = logging.getLogger("latentlab")


class LossTracker(nn.Module):
    """Per (tiny generator, series) moving averages and the last good fit of each series.

    Args:
        sizes: parameter counts N_k of the K tiny generators, increasing.
        series: names of the S series (used in logs).
        decay: EMA decay of the averages.
    """

    def __init__(self, sizes: list[int], series: list[str], decay: float):
        super().__init__()
        self.sizes, self.series, self.decay = sizes, series, decay
        k, s = len(sizes), len(series)
        self.register_buffer("average", torch.zeros(k, s, dtype=torch.float64))
        self.register_buffer("weight", torch.zeros(k, s, dtype=torch.float64))
        self.register_buffer("pending", torch.zeros(2, k, s, dtype=torch.float64))
        # per series: E, A, alpha, n_ref, largest |residual|; NaN until a fit succeeds
        self.register_buffer("fit", torch.full((s, 5), float("nan"), dtype=torch.float64))
        self.records: list[dict] = []

    @torch.no_grad()
    def add(self, k: int, series: torch.Tensor, values: torch.Tensor) -> None:
        """Add per-item values (B,) of tiny generator k, each in series `series` (B,) int64."""
        s = len(self.series)
        self.pending[0, k] += torch.bincount(series, values.double(), minlength=s)
        self.pending[1, k] += torch.bincount(series, minlength=s).double()

    @torch.no_grad()
    def fold(self) -> None:
        """Fold the pending sums into the averages (global over ranks)."""
        if distributed():
            all_reduce_sum_(self.pending)
        sums, counts = self.pending
        decay = torch.where(counts > 0, self.decay, 1.0).double()
        self.average.mul_(decay).add_((1 - decay) * sums / counts.clamp_min(1))
        self.weight.mul_(decay).add_(1 - decay)
        self.pending.zero_()

    def averages(self) -> torch.Tensor:
        """(K, S) bias-corrected averages (NaN where no data yet)."""
        return torch.where(self.weight > 0, self.average / self.weight.clamp_min(1e-300),
                           torch.full_like(self.average, float("nan")))

    def fitted(self, s: int) -> bool:
        return bool(torch.isfinite(self.fit[s, 0]))

    def law(self, s: int) -> PowerLaw | None:
        """The last good fit of series s."""
        if not self.fitted(s):
            return None
        e, a, alpha, n_ref, _ = self.fit[s].tolist()
        return PowerLaw(e, a, alpha, n_ref, ())

    def refit(self, step: int, n_big: int) -> list[PowerLaw | None]:
        """Fit every series; an ill-posed one keeps its last good fit, and the log says so.
        Returns each series' fit now in force (None: never fitted)."""
        averages = self.averages()
        for s, name in enumerate(self.series):
            losses = averages[:, s].tolist()
            record = {"step": step, "series": name, "params": self.sizes, "losses": losses,
                      "n_big": n_big}
            try:
                law = fit_power_law(self.sizes, losses)
            except IllPosedFit as e:
                kept = "the last good fit" if self.fitted(s) else "no fit yet"
                log.info("step %d: scaling fit of %s is ill-posed (%s); keeping %s",
                         step, name, e, kept)
                self.records.append(record | {"ok": False, "reason": str(e)})
                continue
            residual = max(abs(r) for r in law.residuals)
            self.fit[s] = torch.tensor([law.E, law.A, law.alpha, law.n_ref, residual])
            self.records.append(record | law.as_dict() | {"ok": True,
                                                          "predicted": law(n_big)})
        return [self.law(s) for s in range(len(self.series))]

    def logs(self) -> dict[str, torch.Tensor]:
        """The fit in force per series, logged every step (window averages stay exact)."""
        logs = {"fit/ok": self.fit[:, 0].isfinite().float().mean()}
        for s, name in enumerate(self.series):
            for i, key in enumerate(("E", "A", "alpha", "n_ref", "residual")):
                logs[f"fit/{name}/{key}"] = self.fit[s, i].float()
        return logs
