"""Moving averages of the tiny generators' losses and the scaling fits made from them.

A coupled recipe tracks S loss series per tiny generator (one per t-bin for a continuous
process; cross-entropy and error rate for tokens). Per-item training losses are summed into
`pending` during a step and folded into bias-corrected exponential moving averages at the start
of the next, after an all-reduce, so every rank holds the same averages. A continuous coupling
also scores its tiny generators on held-out latents at every fit (`observe`); once it has, the
fits use the last H of those scorings, L(N, S) over the sizes and the samples each generator had
trained on, instead of the training averages. Everything is a buffer: a resumed run folds and
fits exactly where the original did.

Legend: K tiny generators, S series, H held-out scorings kept.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from latentlab.recipes.scaling import IllPosedFit, PowerLaw, fit_scaling_law
from latentlab.tokenizers.bottlenecks.sync import all_reduce_sum_, distributed

log = logging.getLogger("latentlab")


class LossTracker(nn.Module):
    """Per (tiny generator, series) moving averages and the last good fit of each series.

    Args:
        sizes: parameter counts N_k of the K tiny generators, increasing.
        series: names of the S series (used in logs).
        decay: EMA decay of the averages.
    """

    def __init__(self, sizes: list[int], series: list[str], decay: float, history: int = 1):
        super().__init__()
        self.sizes, self.series, self.decay = sizes, series, decay
        k, s = len(sizes), len(series)
        self.register_buffer("average", torch.zeros(k, s, dtype=torch.float64))
        self.register_buffer("weight", torch.zeros(k, s, dtype=torch.float64))
        self.register_buffer("pending", torch.zeros(2, k, s, dtype=torch.float64))
        # held-out scorings, newest last: samples trained on (H,) and losses (H, K, S); NaN: none
        self.register_buffer("seen", torch.full((history,), float("nan"), dtype=torch.float64))
        self.register_buffer("heldout", torch.full((history, k, s), float("nan"),
                                                   dtype=torch.float64))
        # per series: E, A, alpha, n_ref, largest |residual|, B, beta, s_ref; NaN until a fit
        self.register_buffer("fit", torch.full((s, 8), float("nan"), dtype=torch.float64))
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

    @torch.no_grad()
    def observe(self, samples: float, losses: torch.Tensor) -> None:
        """Keep a held-out scoring: losses (K, S) after `samples` training samples."""
        self.seen.copy_(torch.cat([self.seen[1:], self.seen.new_tensor([samples])]))
        self.heldout.copy_(torch.cat([self.heldout[1:], losses[None].to(self.heldout)]))

    def latest(self) -> torch.Tensor:
        """(K, S) the losses the fits compare against: the last held-out scoring, or the
        training averages before any."""
        return self.heldout[-1] if self.observed else self.averages()

    @property
    def observed(self) -> bool:
        return bool(torch.isfinite(self.seen[-1]))

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
        e, a, alpha, n_ref, _, b, beta, s_ref = self.fit[s].tolist()
        return PowerLaw(e, a, alpha, n_ref, (), b, beta, s_ref)

    def _points(self, s: int) -> tuple[list[float], list[float], list[float]]:
        """(sizes, samples, losses) of series s: every kept held-out scoring (the last alone
        while fewer than 3 are kept), or the training averages (one budget) before any."""
        if not self.observed:
            return list(self.sizes), [1.0] * len(self.sizes), self.averages()[:, s].tolist()
        rows = torch.isfinite(self.seen).nonzero().flatten().tolist()
        if len(rows) < 3:  # L(N, S) needs 3 budgets: until then L(N) on the last scoring
            rows = rows[-1:]
        n = [float(size) for _ in rows for size in self.sizes]
        seen = [float(self.seen[h]) for h in rows for _ in self.sizes]
        return n, seen, [float(v) for h in rows for v in self.heldout[h, :, s]]

    @property
    def last_fit(self) -> int:
        """The step of the last `refit` (-1: none since the tracker was built or restored)."""
        return self.records[-1]["step"] if self.records else -1

    def refit(self, step: int, n_big: int, s_big: float = float("inf")
              ) -> list[PowerLaw | None]:
        """Fit every series; an ill-posed one keeps its last good fit, and the log says so.
        Returns each series' fit now in force (None: never fitted)."""
        for s, name in enumerate(self.series):
            n, seen, losses = self._points(s)
            record = {"step": step, "series": name, "params": self.sizes,
                      "losses": self.latest()[:, s].tolist(), "n_big": n_big,
                      "heldout": self.observed}
            try:
                law = fit_scaling_law(n, seen, losses)
            except IllPosedFit as e:
                kept = "the last good fit" if self.fitted(s) else "no fit yet"
                log.info("step %d: scaling fit of %s is ill-posed (%s); keeping %s",
                         step, name, e, kept)
                self.records.append(record | {"ok": False, "reason": str(e)})
                continue
            residual = max(abs(r) for r in law.residuals)
            self.fit[s] = torch.tensor([law.E, law.A, law.alpha, law.n_ref, residual, law.B,
                                        law.beta, law.s_ref])
            self.records.append(record | law.as_dict() | {"ok": True,
                                                          "predicted": law(n_big, s_big)})
        return [self.law(s) for s in range(len(self.series))]

    def logs(self) -> dict[str, torch.Tensor]:
        """The fit in force per series, logged every step (window averages stay exact)."""
        logs = {"fit/ok": self.fit[:, 0].isfinite().float().mean()}
        for s, name in enumerate(self.series):
            for i, key in enumerate(("E", "A", "alpha", "n_ref", "residual", "B", "beta")):
                logs[f"fit/{name}/{key}"] = self.fit[s, i].float()
        return logs
