"""Vector quantisation (VQ-VAE, van den Oord et al. 2017): each token becomes its nearest entry
of a learned codebook of K vectors.

- Nearest code by squared L2 distance or, with `cosine`, between l2-normalised tokens and codes
  (ViT-VQGAN, Yu et al. 2022, sec. 3.2).
- Straight-through gradient to the encoder; commitment loss beta * ||z - sg(q)||^2.
- The codebook learns either by the codebook loss ||sg(z) - q||^2 (update="loss", a parameter)
  or by exponential moving averages of cluster sizes and sums (update="ema", a buffer; VQ-VAE
  appendix A.1, VQ-VAE-2 Razavi et al. 2019), with Laplace smoothing of the sizes.
- k-means initialisation from the first training batch (k-means++ seeding, Arthur &
  Vassilvitskii 2007, then Lloyd iterations), as in Jukebox / lucidrains' vector-quantize.
- Dead-code restart: a code whose EMA count falls below `dead_threshold` is replaced by a random
  token of the current batch (Jukebox, Dhariwal et al. 2020, sec. 2.3; Zeghidour et al. 2021).

Under torch.distributed (training only): per-step counts and sums are summed over ranks; k-means
init and restarts are computed on every rank and rank 0's result is broadcast, so every rank
holds the same codebook. All quantisation maths is fp32, also under bf16 autocast.

Legend: B batch, C channels, S spatial dims, N tokens (B * prod(S)), K codebook size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from latentlab.tokenizers.bottlenecks.base import (
    Bottleneck,
    BottleneckOutput,
    channels_first,
    flatten_tokens,
    full_precision,
    straight_through,
    unflatten_tokens,
)
from latentlab.tokenizers.bottlenecks.sync import all_reduce_sum_, broadcast_
from latentlab.tokenizers.bottlenecks.usage import CodeUsage, code_histogram


@dataclass
class VQConfig:
    kind: Literal["vq"] = "vq"
    """Vector quantisation."""
    codebook_size: int = 512
    """Number of codes K."""
    beta: float = 0.25
    """Weight of the commitment loss ||z - sg(q)||^2 (VQ-VAE's beta)."""
    update: Literal["ema", "loss"] = "ema"
    """How the codebook learns: EMA of cluster sizes and sums, or the codebook loss
    ||sg(z) - q||^2 through the optimizer."""
    decay: float = 0.99
    """Decay of the EMA counts (both modes: they find dead codes) and sums (ema)."""
    eps: float = 1e-5
    """Laplace smoothing of the EMA cluster sizes (ema), so no code divides by zero."""
    kmeans_init: bool = True
    """Initialise the codebook by k-means on the first training batch (else uniform in
    [-1/K, 1/K], the VQ-VAE / taming init)."""
    kmeans_iters: int = 10
    """Lloyd iterations after k-means++ seeding (0: seeding only)."""
    restart_dead: bool = True
    """Replace dead codes by random tokens of the current batch (training only)."""
    dead_threshold: float = 1.0
    """A code is dead when its EMA count of tokens per training step is below this."""
    cosine: bool = False
    """Compare l2-normalised tokens with l2-normalised codes; the latent is then unit-norm."""

    def __post_init__(self):
        if self.codebook_size < 1:
            raise ValueError(f"codebook_size: must be >= 1, got {self.codebook_size}")
        if self.beta < 0:
            raise ValueError(f"beta: must be >= 0, got {self.beta}")
        if self.update not in ("ema", "loss"):
            raise ValueError(f"update: must be 'ema' or 'loss', got {self.update!r}")
        if not 0 < self.decay < 1:
            raise ValueError(f"decay: must be in (0, 1), got {self.decay}")
        if self.eps <= 0:
            raise ValueError(f"eps: must be > 0, got {self.eps}")
        if self.kmeans_iters < 0:
            raise ValueError(f"kmeans_iters: must be >= 0, got {self.kmeans_iters}")
        if self.dead_threshold <= 0:
            raise ValueError(f"dead_threshold: must be > 0, got {self.dead_threshold}")


class VectorQuantizer(Bottleneck):
    """(B, C, *S) -> nearest codes (B, C, *S) fp32 and their indices (B, *S).

    Loss: beta * commitment (+ the codebook loss with update="loss"), each a mean over elements.
    Stats: "perplexity" exp entropy of this batch's code histogram; "usage" fraction of codes in
    use (training: picked within the last ~100 steps; eval: in this batch); "dead_codes" number
    of codes whose EMA count is below `dead_threshold` (training: after this step's EMA update,
    before its restarts); "commit" the unweighted commitment loss.

    Buffers: `cluster_size` (K,) EMA count per step; `embed_sum` (K, C) EMA sums (ema);
    `initialized` whether the first training batch has initialised (and synced) the codebook.
    """

    discrete = True

    def __init__(self, channels: int, cfg: VQConfig | None = None):
        super().__init__(channels)
        self.cfg = cfg = cfg or VQConfig()
        self.codebook_size = k = cfg.codebook_size
        init = torch.empty(k, channels).uniform_(-1.0 / k, 1.0 / k)
        if cfg.update == "loss":
            self.codebook = nn.Parameter(init)
        else:
            self.register_buffer("codebook", init)
            # invariant: codebook ~= embed_sum / cluster_size (one pseudo-count per code at start)
            self.register_buffer("embed_sum", init.clone())
        self.register_buffer("cluster_size", torch.ones(k))
        self.register_buffer("initialized", torch.tensor(False))
        self.usage = CodeUsage(k)

    # ------------------------------------------------------------------ codes and indices

    def codes(self) -> torch.Tensor:
        """(K, C) the code vectors tokens are compared with (unit-norm with cosine)."""
        return F.normalize(self.codebook, dim=-1) if self.cfg.cosine else self.codebook

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """(...) int64 -> (..., C) code vectors; gradient to the codebook with update="loss"."""
        q = self.codebook[indices]
        return F.normalize(q, dim=-1) if self.cfg.cosine else q

    @torch.no_grad()
    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C) fp32 tokens (already normalised with cosine) -> (N,) index of the nearest code;
        ties go to the lowest index."""
        return nearest_code(x, self.codes())

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, *S) int64 -> (B, C, *S) fp32 codes, exactly the latent forward gives."""
        return channels_first(self.lookup(indices))

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, *S) int64 index of the nearest code (identical codes: the lowest)."""
        with full_precision(codes) as c32:
            x, packed = flatten_tokens(c32)
            x = F.normalize(x, dim=-1) if self.cfg.cosine else x
            return unflatten_tokens(self.nearest(x), packed)

    # ------------------------------------------------------------------ forward

    def forward(self, z: torch.Tensor) -> BottleneckOutput:
        """(B, C, *S) -> latent (B, C, *S) fp32, indices (B, *S) int64."""
        self.check_input(z)
        with full_precision(z) as z32:
            x, packed = flatten_tokens(z32)  # (N, C)
            x = F.normalize(x, dim=-1) if self.cfg.cosine else x
            if self.training and not self.initialized:
                self._initialize(x.detach())
            idx = self.nearest(x)  # (N,)
            q = self.lookup(idx)  # (N, C)
            commit = F.mse_loss(x, q.detach())
            loss = self.cfg.beta * commit
            if self.cfg.update == "loss":
                loss = loss + F.mse_loss(q, x.detach())
            latent = unflatten_tokens(straight_through(q, x), packed)
            indices = unflatten_tokens(idx, packed)
            stats = self._learn(x.detach(), idx) if self.training else self._eval_stats(idx)
        return BottleneckOutput(latent, indices, loss, stats | {"commit": commit.detach()})

    # ------------------------------------------------------------------ training-time updates

    @torch.no_grad()
    def _initialize(self, x: torch.Tensor) -> None:
        """First training batch: k-means (optional), then rank 0's codebook everywhere."""
        if self.cfg.kmeans_init:
            self.codebook.copy_(kmeans(x, self.codebook_size, self.cfg.kmeans_iters,
                                       self.cfg.cosine))
        broadcast_(self.codebook.data)
        # cluster sizes: this batch's counts under the new codes, summed over ranks; an empty
        # cluster keeps a tiny count so its EMA sum keeps the code's direction (not exactly 0)
        if self.cfg.kmeans_init:
            counts = all_reduce_sum_(code_histogram(self.nearest(x), self.codebook_size))
            self.cluster_size.copy_(counts.clamp_min(self.cfg.eps))
        if self.cfg.update == "ema":
            self.embed_sum.copy_(self.codebook * self.cluster_size[:, None])
        self.initialized.fill_(True)

    @torch.no_grad()
    def _learn(self, x: torch.Tensor, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """EMA of counts (and sums, and the codebook, with update="ema"); dead-code restarts.

        Args:
            x: (N, C) this batch's tokens (normalised with cosine). idx: (N,) their codes.
        """
        k, decay = self.codebook_size, self.cfg.decay
        counts = code_histogram(idx, k)  # (K,)
        if self.cfg.update == "ema":
            sums = torch.zeros_like(self.codebook).index_add_(0, idx, x)  # (K, C)
            both = all_reduce_sum_(torch.cat([counts[:, None], sums], dim=1))  # one collective
            counts, sums = both[:, 0], both[:, 1:]
            self.embed_sum.lerp_(sums, 1 - decay)
        else:
            all_reduce_sum_(counts)
        self.cluster_size.lerp_(counts, 1 - decay)
        if self.cfg.update == "ema":
            # Laplace smoothing (VQ-VAE-2 / sonnet): sizes never reach 0, their total is kept
            n = self.cluster_size.sum()
            smoothed = (self.cluster_size + self.cfg.eps) / (n + k * self.cfg.eps) * n
            self.codebook.copy_(self.embed_sum / smoothed[:, None])
        dead = self.cluster_size < self.cfg.dead_threshold  # (K,), the same on every rank
        stats = self.usage(idx, counts) | {"dead_codes": dead.sum().float()}
        if self.cfg.restart_dead:
            self._restart_dead(x, dead)
        return stats

    def _eval_stats(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        dead = self.cluster_size < self.cfg.dead_threshold
        return self.usage(idx) | {"dead_codes": dead.sum().float()}

    @torch.no_grad()
    def _restart_dead(self, x: torch.Tensor, dead: torch.Tensor) -> None:
        """Dead codes (K,) bool become random tokens of rank 0's batch x (N, C). Their EMA count
        is set to the threshold, so one that attracts no token is restarted again next step."""
        n_dead = int(dead.sum())  # a device-to-host sync, once per training step
        if n_dead == 0:
            return
        n = len(x)
        pick = (torch.randperm(n, device=x.device)[:n_dead] if n >= n_dead
                else torch.randint(n, (n_dead,), device=x.device))
        new = broadcast_(x[pick].contiguous())  # (n_dead, C)
        self.codebook[dead] = new
        self.cluster_size[dead] = self.cfg.dead_threshold
        if self.cfg.update == "ema":
            self.embed_sum[dead] = new * self.cfg.dead_threshold


def nearest_code(x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """(N, C) tokens, (K, C) codes -> (N,) index of the nearest code in squared L2."""
    # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; ||x||^2 is the same for every code: left out
    d = codes.square().sum(1) - 2 * x @ codes.T  # (N, K)
    return d.argmin(1)


def kmeans(x: torch.Tensor, k: int, iters: int, cosine: bool = False) -> torch.Tensor:
    """(N, C) fp32 points -> (K, C) centroids: k-means++ seeding, then `iters` Lloyd steps
    (spherical k-means with `cosine`: centroids renormalised). Randomness from the global RNG.

    With fewer distinct points than K, the surplus centroids repeat points; they get no tokens
    and the dead-code restart replaces them.
    """
    n = len(x)
    centroids = x.new_empty(k, x.shape[1])
    centroids[0] = x[torch.randint(n, (1,), device=x.device)]
    d2 = (x - centroids[0]).square().sum(1)  # (N,) squared distance to the nearest centroid
    for j in range(1, k):
        # k-means++: the next centroid is a point drawn with probability proportional to d2
        total = d2.sum()  # a host sync per centroid: fine, this runs once
        probs = d2 / total if total > 0 else torch.ones_like(d2) / n
        centroids[j] = x[torch.multinomial(probs, 1)]
        d2 = torch.minimum(d2, (x - centroids[j]).square().sum(1))
    for _ in range(iters):
        idx = nearest_code(x, centroids)
        counts = torch.bincount(idx, minlength=k).float()  # (K,)
        sums = torch.zeros_like(centroids).index_add_(0, idx, x)
        filled = counts > 0  # an empty cluster keeps its centroid
        centroids[filled] = sums[filled] / counts[filled, None]
        if cosine:
            centroids = F.normalize(centroids, dim=-1)
    return centroids
