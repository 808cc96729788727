"""The KL bottleneck: a diagonal Gaussian posterior q(z | x) = N(mean, diag(exp(logvar))), as in
the VAE (Kingma & Welling 2014) and the latent-diffusion autoencoder (Rombach et al. 2022).

The encoder gives 2C channels, mean and log-variance. Training samples by reparameterisation,
mean + std * eps; eval returns the mean. The loss is weight * KL(q || N(0, I)), summed over the
latent dims (C and S) and averaged over the batch, as latent-diffusion's / taming's
`DiagonalGaussianDistribution` does, so the weight means the same at any latent size per item.

Legend: B batch, C latent channels, S spatial dims.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from latentlab.tokenizers.bottlenecks.base import Bottleneck, BottleneckOutput, full_precision


@dataclass
class KLConfig:
    kind: Literal["kl"] = "kl"
    """A VAE's diagonal Gaussian posterior."""
    weight: float = 1e-4
    """Weight of the KL term in the loss."""
    logvar_min: float = -30.0
    """Lower clamp of the log-variance (as latent diffusion does: keeps exp finite)."""
    logvar_max: float = 20.0
    """Upper clamp of the log-variance."""

    def __post_init__(self):
        if self.weight < 0:
            raise ValueError(f"weight: must be >= 0, got {self.weight}")
        if self.logvar_min >= self.logvar_max:
            raise ValueError(f"logvar_min: must be below logvar_max ({self.logvar_max}), got "
                             f"{self.logvar_min}")


class KLBottleneck(Bottleneck):
    """(B, 2C, *S) mean and log-variance -> (B, C, *S) posterior sample (training) or mean (eval).

    Loss: weight * KL(q || N(0, I)), summed over (C, *S), averaged over B.
    Stats: "kl" the same KL without the weight; "posterior_std" the mean posterior std.
    """

    def __init__(self, channels: int, cfg: KLConfig | None = None):
        super().__init__(channels)
        self.cfg = cfg or KLConfig()

    @property
    def in_channels(self) -> int:
        return 2 * self.channels

    def forward(self, z: torch.Tensor) -> BottleneckOutput:
        """(B, 2C, *S) -> latent (B, C, *S) in z's dtype; the KL in fp32."""
        self.check_input(z)
        with full_precision(z) as z32:
            mean, logvar = z32.chunk(2, dim=1)  # (B, C, *S) each
            logvar = logvar.clamp(self.cfg.logvar_min, self.cfg.logvar_max)
            std = torch.exp(0.5 * logvar)
            # the noise comes from the global RNG, which the engine seeds per step
            latent = mean + std * torch.randn_like(mean) if self.training else mean
            kl = self.kl(mean, logvar)
        stats = {"kl": kl.detach(), "posterior_std": std.detach().mean()}
        return BottleneckOutput(latent.to(z.dtype), None, self.cfg.weight * kl, stats)

    @staticmethod
    def kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(N(mean, exp(logvar)) || N(0, 1)) = 0.5 * (mean^2 + var - 1 - logvar), summed over
        every dim but the first and averaged over it -> scalar."""
        per_item = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)  # (B,)
        return per_item.mean()
