"""The identity bottleneck (a plain autoencoder), optionally with per-channel normalisation.

With `normalize`, the latent is standardised per channel without a learnable scale or shift:
the coupled recipe (DESIGN.md sec. 4.3) regularises the latent with a tiny generator's loss,
and an encoder free to choose the latent's scale wins that loss by shrinking the latent ("change
of scale", Remark 3.6 of "Complexity Matters", shared/seeds/004_*.txt).

Choice: in training the latent is standardised with the *batch* statistics, and the gradient
flows through them (BatchNorm with affine=False, Ioffe & Szegedy 2015). The output is then
exactly invariant to the scale of z, so the encoder gets no gradient toward shrinking it. The
alternative, dividing by detached running statistics in training too, lets the encoder shrink z
a little every step while the running estimate chases it, a drift toward zero that never ends.
Eval uses the running statistics, so eval outputs do not depend on the batch. Under
torch.distributed each rank standardises with its own batch (like BatchNorm without SyncBN), and
the running statistics are updated from the statistics of the global batch so ranks agree.

Legend: B batch, C channels, S spatial dims, N tokens (B * prod(S)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from latentlab.tokenizers.bottlenecks.base import (
    Bottleneck,
    BottleneckOutput,
    flatten_tokens,
    full_precision,
    unflatten_tokens,
)
from latentlab.tokenizers.bottlenecks.sync import all_reduce_sum_, distributed

DEAD_VARIANCE = 1e-4
"""A channel whose variance over the batch is below this (before normalisation) is dead."""


@dataclass
class IdentityConfig:
    kind: Literal["identity"] = "identity"
    """A plain autoencoder."""
    normalize: bool = False
    """Standardise each latent channel (batch statistics in training, running statistics in
    eval; no learnable scale or shift)."""
    momentum: float = 0.01
    """Weight of each batch in the running mean/variance (normalize only)."""
    eps: float = 1e-5
    """Added to the variance before dividing by its square root."""

    def __post_init__(self):
        if not 0 < self.momentum <= 1:
            raise ValueError(f"momentum: must be in (0, 1], got {self.momentum}")
        if self.eps <= 0:
            raise ValueError(f"eps: must be > 0, got {self.eps}")


class IdentityBottleneck(Bottleneck):
    """z -> z, or z standardised per channel (see the module docstring). Loss 0.

    Stats: "latent_var" the mean over channels of the per-channel variance of z over the batch
    (before normalisation); "dead_channels" the fraction of channels whose variance is below
    1e-4 (a collapsing latent shows here first).
    """

    def __init__(self, channels: int, cfg: IdentityConfig | None = None):
        super().__init__(channels)
        self.cfg = cfg or IdentityConfig()
        if self.cfg.normalize:
            self.register_buffer("running_mean", torch.zeros(channels))
            self.register_buffer("running_var", torch.ones(channels))
            self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def forward(self, z: torch.Tensor) -> BottleneckOutput:
        """(B, C, *S) -> latent (B, C, *S), same dtype as z; indices None."""
        self.check_input(z)
        with full_precision(z) as z32:
            tokens, packed = flatten_tokens(z32)  # (N, C)
            var, mean = torch.var_mean(tokens, dim=0, correction=0)  # (C,) each
            stats = {"latent_var": var.detach().mean(),
                     "dead_channels": (var.detach() < DEAD_VARIANCE).float().mean()}
            if not self.cfg.normalize:
                return BottleneckOutput(z, None, z.new_zeros((), dtype=torch.float32), stats)
            if self.training:
                if len(tokens) < 2:
                    raise ValueError("normalize: batch statistics need more than one token per "
                                     f"channel in training, got latents of shape {tuple(z.shape)}")
                self._update_running(mean.detach(), var.detach(), len(tokens))
                # the gradient flows through the batch statistics (see the module docstring)
                normed = (tokens - mean) * torch.rsqrt(var + self.cfg.eps)
            else:
                normed = (tokens - self.running_mean) * torch.rsqrt(self.running_var + self.cfg.eps)
            latent = unflatten_tokens(normed, packed).to(z.dtype)
        return BottleneckOutput(latent, None, latent.new_zeros((), dtype=torch.float32), stats)

    @torch.no_grad()
    def std(self, z: torch.Tensor) -> torch.Tensor:
        """(C,) fp32 per-channel scale `forward` divides by (normalize only): the batch's in
        training, the running one in eval. Changes no state."""
        if not self.training:
            return torch.sqrt(self.running_var + self.cfg.eps)
        with full_precision(z) as z32:
            var = flatten_tokens(z32)[0].var(dim=0, correction=0)
        return torch.sqrt(var + self.cfg.eps)

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, n: int) -> None:
        """Fold one batch's (C,) moments into the running estimate (global batch if distributed).

        For the first 1 / momentum updates the estimate is the plain average of all batches so
        far (momentum 1 / (t + 1)), so it is not biased toward its initial (0, 1).
        """
        if distributed():  # moments of the union of the ranks' batches
            total = all_reduce_sum_(mean.new_tensor(float(n)))
            g_mean = all_reduce_sum_(mean * n) / total
            var = all_reduce_sum_((var + (mean - g_mean).square()) * n) / total
            mean = g_mean
        # a tensor, not a Python float: no device-to-host sync on GPU
        momentum = (1.0 / (self.num_updates + 1)).clamp_min(self.cfg.momentum)
        self.running_mean.lerp_(mean, momentum)
        self.running_var.lerp_(var, momentum)
        self.num_updates += 1
