"""DDPM (Ho et al. 2020) with eps-prediction, its ancestral sampler and DDIM (Song et al. 2021).

Time mapping: the process has discrete steps k = 0..T (k = 0 is clean data, alphas_bar[0] = 1)
and the denoiser sees t = k / T, so k = T is t = 1 (noise) as everywhere in latentlab. Training
draws k uniformly from 1..T. A t that is not a multiple of 1 / T is rounded to the nearest k.

Schedules: "linear" betas from 1e-4 to 0.02 (Ho et al. section 4); "cosine" alphas_bar from
Nichol & Dhariwal 2021 (eq. 17, offset s = 0.008) with betas clipped at 0.999.

Legend: B batch, D any trailing data dims, T number of timesteps, S number of sampler steps.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from latentlab.generators.process import EpsilonProcess, Model

SCHEDULES = ("linear", "cosine")


def linear_betas(timesteps: int, start: float = 1e-4, end: float = 0.02) -> Tensor:
    """(T,) betas evenly spaced from `start` to `end`, in float64 (Ho et al. 2020)."""
    return torch.linspace(start, end, timesteps, dtype=torch.float64)


def cosine_betas(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """(T,) betas of the cosine alphas_bar, clipped at `max_beta` (Nichol & Dhariwal, eq. 17)."""
    k = torch.arange(timesteps + 1, dtype=torch.float64)
    f = torch.cos((k / timesteps + s) / (1 + s) * math.pi / 2) ** 2
    alphas_bar = f / f[0]
    return (1 - alphas_bar[1:] / alphas_bar[:-1]).clamp(max=max_beta)


def _step_pairs(process: DDPM, steps: int) -> list[tuple[int, int]]:
    ks = process.timestep_sequence(steps)
    return list(zip(ks[:-1], ks[1:], strict=True))


def _ancestral(process: DDPM, model: Model, x: Tensor, steps: int,
               generator: torch.Generator | None) -> Tensor:
    """Sample q(x_{k'} | x_k, x0_hat) with its posterior variance beta_tilde (Ho et al. eq. 6-7).

    With steps = T this is Ho et al.'s sampler; with fewer steps the jumps k -> k' use the
    effective beta = 1 - alphas_bar[k] / alphas_bar[k'] (equal to DDIM with eta = 1).
    """
    for k, k_prev in _step_pairs(process, steps):
        ab, ab_prev = process.alphas_bar[k].item(), process.alphas_bar[k_prev].item()
        beta = 1 - ab / ab_prev
        x0 = process.x0_from_eps(model(x, process.t_of(k, x)), x, k)
        mean = (math.sqrt(ab_prev) * beta / (1 - ab)) * x0 \
            + (math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab)) * x
        var = (1 - ab_prev) / (1 - ab) * beta  # beta_tilde; 0 on the last jump to k' = 0
        x = mean
        if k_prev > 0:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + math.sqrt(var) * noise
    return x


def _ddim(process: DDPM, model: Model, x: Tensor, steps: int,
          generator: torch.Generator | None, eta: float = 0.0) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12 and 16): eta = 0 deterministic, eta = 1 DDPM-like."""
    for k, k_prev in _step_pairs(process, steps):
        ab, ab_prev = process.alphas_bar[k].item(), process.alphas_bar[k_prev].item()
        eps = model(x, process.t_of(k, x))
        x0 = process.x0_from_eps(eps, x, k)
        sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
        x = math.sqrt(ab_prev) * x0 + math.sqrt(max(1 - ab_prev - sigma**2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * torch.randn(x.shape, generator=generator, device=x.device,
                                        dtype=x.dtype)
    return x


class DDPM(EpsilonProcess):
    """Discrete-time diffusion, x_k = sqrt(alphas_bar[k]) x_0 + sqrt(1 - alphas_bar[k]) eps.

    Args:
        schedule: "linear" or "cosine".
        timesteps: T, the number of noising steps.

    Attributes:
        betas: (T + 1,) float64 with betas[0] = 0 so that betas[k] is step k's beta.
        alphas_bar: (T + 1,) float64, alphas_bar[0] = 1 (data), strictly decreasing.
    """

    samplers = {"ancestral": _ancestral, "ddim": _ddim}
    default_sampler = "ancestral"

    def __init__(self, schedule: str = "linear", timesteps: int = 1000):
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        if timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {timesteps}")
        self.schedule, self.timesteps = schedule, timesteps
        betas = linear_betas(timesteps) if schedule == "linear" else cosine_betas(timesteps)
        self.betas = torch.cat([betas.new_zeros(1), betas])
        self.alphas_bar = torch.cumprod(1 - self.betas, dim=0)

    def __repr__(self) -> str:
        return f"DDPM(schedule={self.schedule!r}, timesteps={self.timesteps})"

    def step_of(self, t: Tensor) -> Tensor:
        """(B,) int64 steps k = round(t T) for times t (B,)."""
        return (t.double() * self.timesteps).round().long().clamp(0, self.timesteps)

    def t_of(self, k: int, x: Tensor) -> Tensor:
        """(B,) time k / T for the batch of x, on x's device and dtype, at least float32 (as
        `time.time_grid`)."""
        return torch.full((x.shape[0],), k / self.timesteps, device=x.device,
                          dtype=torch.promote_types(x.dtype, torch.float32))

    def timestep_sequence(self, steps: int) -> list[int]:
        """S + 1 evenly spaced steps from T down to 0 (both included) for a sampler of S steps."""
        if not 1 <= steps <= self.timesteps:
            raise ValueError(f"steps must be in 1..{self.timesteps}, got {steps}")
        ks = torch.linspace(self.timesteps, 0, steps + 1, dtype=torch.float64).round().long()
        return ks.tolist()

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        ab = self.alphas_bar[self.step_of(t).cpu()]  # (B,) float64
        # both roots in float64 before the cast keep small sigmas (k near 0) accurate
        return ab.sqrt().to(t), (1 - ab).sqrt().to(t)

    def sample_train_time(self, n, generator, device, dtype) -> Tensor:
        k = torch.randint(1, self.timesteps + 1, (n,), generator=generator, device=device)
        return k.to(dtype) / self.timesteps

    def x0_from_eps(self, eps: Tensor, x: Tensor, k: int) -> Tensor:
        """(x_k - sqrt(1 - alphas_bar[k]) eps) / sqrt(alphas_bar[k]) for one integer step k."""
        ab = self.alphas_bar[k].item()
        return (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
