"""The Gumbel-softmax bottleneck of DALL-E's discrete VAE (Ramesh et al. 2021, sec. 2.1; Jang et
al. 2017 and Maddison et al. 2017 for the relaxation).

The encoder gives K logits per position, a categorical posterior q(k | x) over a codebook of K
learned codes. In training the latent is a relaxed sample of it, y = softmax((logits + g) / tau)
with Gumbel noise g, times the codebook; the temperature tau is annealed from `tau_start` to
`tau_end` over `anneal_steps` training steps (exponentially), so the relaxed samples approach
one-hot codes. The loss is the KL of q to the uniform prior over the K codes, weighted. At
inference the index is argmax of the logits and the latent its code, so every prior over token
indices (AR, PixelCNN, MaskGIT) and the codec work on it; indices <-> codes is exact.

The temperature follows the training step the recipe gives (`set_step`), kept in a buffer: a
resumed run anneals exactly as one that was not stopped.

Legend: B batch, S spatial dims, N tokens (B * prod(S)), K codebook size, C code channels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from latentlab.tokenizers.bottlenecks.base import (
    Bottleneck,
    BottleneckOutput,
    channels_first,
    channels_last_tokens,
    flatten_tokens,
    full_precision,
    unflatten_tokens,
)
from latentlab.tokenizers.bottlenecks.usage import CodeUsage


@dataclass
class GumbelConfig:
    kind: Literal["gumbel"] = "gumbel"
    """Gumbel-softmax relaxation of a categorical over a codebook (DALL-E's dVAE)."""
    codebook_size: int = 512
    """Number of codes K (the encoder gives K logits per position)."""
    tau_start: float = 1.0
    """Temperature of the relaxation at step 0."""
    tau_end: float = 1 / 16
    """Temperature reached after `anneal_steps` (DALL-E: 1 -> 1/16)."""
    anneal_steps: int = 1000
    """Training steps of the exponential anneal from tau_start to tau_end."""
    kl_weight: float = 1e-3
    """Weight of KL(q(k | x) || uniform), per position, averaged over positions."""
    hard: bool = False
    """Straight-through: one-hot codes forward, the relaxed gradient backward."""

    def __post_init__(self):
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size: must be >= 2, got {self.codebook_size}")
        if not 0 < self.tau_end <= self.tau_start:
            raise ValueError(f"tau_end: must be in (0, tau_start], got {self.tau_end}")
        if self.anneal_steps < 1:
            raise ValueError(f"anneal_steps: must be >= 1, got {self.anneal_steps}")
        if self.kl_weight < 0:
            raise ValueError(f"kl_weight: must be >= 0, got {self.kl_weight}")

    def temperature(self, step: int) -> float:
        """tau_start (tau_end / tau_start) ** (step / anneal_steps), tau_end from then on."""
        frac = min(step / self.anneal_steps, 1.0)
        return self.tau_start * (self.tau_end / self.tau_start) ** frac


class GumbelQuantizer(Bottleneck):
    """(B, K, *S) logits -> latent (B, C, *S): relaxed codes (training) or the argmax code.

    Loss: kl_weight * mean over positions of KL(softmax(logits) || uniform).
    Stats: "kl" the same KL unweighted, "temperature", "perplexity" and "usage" (`usage.py`).
    """

    discrete = True

    def __init__(self, channels: int, cfg: GumbelConfig | None = None):
        super().__init__(channels)
        self.cfg = cfg = cfg or GumbelConfig()
        self.codebook_size = cfg.codebook_size
        self.codebook = nn.Parameter(torch.randn(cfg.codebook_size, channels))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.usage = CodeUsage(cfg.codebook_size)

    @property
    def in_channels(self) -> int:
        return self.codebook_size

    def set_step(self, step: int) -> None:
        self.step.fill_(step)

    @property
    def temperature(self) -> float:
        return self.cfg.temperature(int(self.step))

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, *S) int64 -> (B, C, *S) fp32 codes, exactly the eval latent."""
        return channels_first(self.codebook.float()[indices])

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) codes -> (B, *S) int64, the nearest code (exact for codes themselves)."""
        tokens = channels_last_tokens(codes.float())
        return torch.cdist(tokens.reshape(-1, self.channels), self.codebook.float()).argmin(1) \
            .reshape(tokens.shape[:-1])

    @staticmethod
    def kl_to_uniform(logits: torch.Tensor) -> torch.Tensor:
        """(N, K) logits -> mean over N of KL(softmax || uniform) = sum p log p + log K."""
        log_p = logits.log_softmax(-1)
        return (log_p.exp() * log_p).sum(-1).mean() + math.log(logits.shape[-1])

    def relaxed(self, logits: torch.Tensor, tau: float) -> torch.Tensor:
        """(N, K) logits -> (N, K) a relaxed one-hot sample at temperature tau (global RNG,
        which the engine seeds per step)."""
        return F.gumbel_softmax(logits, tau=tau, hard=self.cfg.hard, dim=-1)

    def forward(self, z: torch.Tensor) -> BottleneckOutput:
        """(B, K, *S) -> latent (B, C, *S) fp32, indices (B, *S) int64 (the argmax)."""
        self.check_input(z)
        with full_precision(z) as z32:
            logits, packed = flatten_tokens(z32)  # (N, K)
            idx = logits.argmax(-1)
            codebook = self.codebook.float()
            if self.training:
                tau = self.temperature
                latent = self.relaxed(logits, tau) @ codebook
            else:
                tau, latent = 0.0, codebook[idx]
            kl = self.kl_to_uniform(logits)
            stats = self.usage(idx) | {"kl": kl.detach(), "temperature": torch.tensor(tau)}
        return BottleneckOutput(unflatten_tokens(latent, packed), unflatten_tokens(idx, packed),
                                self.cfg.kl_weight * kl, stats)
