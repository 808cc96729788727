"""Lookup-free quantisation (LFQ, MAGVIT-v2: Yu et al. 2023, "Language Model Beats Diffusion",
sec. 3.1): each channel is quantised to its sign, -1 or +1, independently.

The codebook is implicit, the 2^C corners of the hypercube {-1, +1}^C. Index convention (shared
with FSQ, `base.digits_to_index`): bit c is 1 when channel c is > 0, and channel 0 is the
*least* significant bit, index = sum_c bit_c * 2^c. A channel exactly 0 maps to -1 (bit 0).

Auxiliary loss: commitment ||z - sg(q)||^2, and the entropy penalty of MAGVIT-v2 (eq. 5),
E_x[H(p(. | x))] - diversity * H(E_x[p(. | x)]): each token confident about its code (low
per-sample entropy) while the batch spreads over the whole codebook (high codebook entropy).
p(k | x) is a softmax over all 2^C codes of -||x - c_k||^2 / temperature, which needs an (N, 2^C)
matrix; hence the limit of 16 channels.

Legend: B batch, C channels, S spatial dims, N tokens (B * prod(S)), K = 2^C codebook size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from latentlab.tokenizers.bottlenecks.base import (
    Bottleneck,
    BottleneckOutput,
    channels_first,
    channels_last_tokens,
    digits_to_index,
    flatten_tokens,
    full_precision,
    index_to_digits,
    straight_through,
    unflatten_tokens,
)
from latentlab.tokenizers.bottlenecks.usage import CodeUsage

MAX_CHANNELS = 16
"""The soft assignment holds N x 2^C probabilities: 2^16 per token is already 256 KiB."""


@dataclass
class LFQConfig:
    kind: Literal["lfq"] = "lfq"
    """Lookup-free quantisation."""
    entropy_weight: float = 0.1
    """Weight of the entropy penalty (per-sample entropy - diversity * codebook entropy)."""
    commitment: float = 0.25
    """Weight of the commitment loss ||z - sg(q)||^2."""
    diversity: float = 1.0
    """Weight of the codebook (batch) entropy inside the entropy penalty."""
    temperature: float = 1.0
    """Temperature of the soft assignment p(k | x) used by the entropy penalty."""

    def __post_init__(self):
        for name in ("entropy_weight", "commitment", "diversity"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature: must be > 0, got {self.temperature}")


class LookupFreeQuantizer(Bottleneck):
    """(B, C, *S) -> signs (B, C, *S) fp32 in {-1, +1} and indices (B, *S) in [0, 2^C).

    Loss: commitment * ||z - sg(q)||^2 (mean) + entropy_weight * (entropy_sample - diversity *
    entropy_codebook).
    Stats: "perplexity" and "usage" (see `usage.py`); "entropy_sample" the mean entropy of each
    token's soft assignment, "entropy_codebook" the entropy of their batch mean (nats, at most
    C log 2); "commit" the unweighted commitment loss.
    """

    discrete = True

    def __init__(self, channels: int, cfg: LFQConfig | None = None):
        super().__init__(channels)
        if channels > MAX_CHANNELS:
            raise ValueError(f"channels: LFQ's implicit codebook has 2^C entries and its entropy "
                             f"loss enumerates them; at most {MAX_CHANNELS} channels, got "
                             f"{channels}")
        self.cfg = cfg or LFQConfig()
        self.codebook_size = 2**channels
        # derived from `channels`, so not saved with the weights
        self.register_buffer("radices", torch.full((channels,), 2), persistent=False)
        all_codes = self.lookup(torch.arange(self.codebook_size))  # (K, C)
        self.register_buffer("codebook", all_codes, persistent=False)
        self.usage = CodeUsage(self.codebook_size)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """(...) int64 -> (..., C) fp32 codes in {-1, +1}."""
        return index_to_digits(indices, self.radices).float() * 2 - 1

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, *S) int64 -> (B, C, *S) fp32 codes, exactly the latent forward gives."""
        return channels_first(self.lookup(indices))

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, *S) int64: the nearest code is the sign of each channel."""
        return digits_to_index(channels_last_tokens(codes) > 0, self.radices)

    def forward(self, z: torch.Tensor) -> BottleneckOutput:
        """(B, C, *S) -> latent (B, C, *S) fp32, indices (B, *S) int64."""
        self.check_input(z)
        with full_precision(z) as z32:
            x, packed = flatten_tokens(z32)  # (N, C)
            idx = digits_to_index(x > 0, self.radices)  # (N,)
            q = self.lookup(idx)  # (N, C)
            commit = F.mse_loss(x, q.detach())
            entropy_sample, entropy_codebook = self.entropies(x)
            loss = (self.cfg.commitment * commit
                    + self.cfg.entropy_weight * (entropy_sample
                                                 - self.cfg.diversity * entropy_codebook))
            latent = unflatten_tokens(straight_through(q, x), packed)
            stats = self.usage(idx) | {"entropy_sample": entropy_sample.detach(),
                                       "entropy_codebook": entropy_codebook.detach(),
                                       "commit": commit.detach()}
        return BottleneckOutput(latent, unflatten_tokens(idx, packed), loss, stats)

    def entropies(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C) fp32 tokens -> (mean per-token entropy, entropy of the mean), in nats."""
        # -||x - c||^2 = 2 x.c - ||x||^2 - C: the last two terms are the same for every code
        logits = 2 * x @ self.codebook.T / self.cfg.temperature  # (N, K)
        log_p = logits.log_softmax(-1)
        p = log_p.exp()
        entropy_sample = -(p * log_p).sum(-1).mean()
        mean_p = p.mean(0)  # (K,)
        entropy_codebook = -torch.special.xlogy(mean_p, mean_p).sum()
        return entropy_sample, entropy_codebook
