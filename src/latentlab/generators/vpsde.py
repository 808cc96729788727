"""The variance-preserving SDE (Song et al. 2021, "Score-Based Generative Modeling through SDEs").

Forward: dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw, beta(t) = beta_min + t (beta_max - beta_min),
so x_t = alpha_t x_0 + sigma_t eps with alpha_t = exp(-1/2 int_0^t beta), sigma_t^2 = 1 - alpha_t^2.
The network predicts eps (as DDPM) and is read as a score: score = -eps_hat / sigma_t. Times live
in [eps, 1] (t = 0 is data, where sigma = 0 and the score is undefined).

Legend: B batch, D any trailing data dims, S number of sampler steps.
"""

from __future__ import annotations

import torch
from torch import Tensor

from latentlab.generators.likelihood import Field
from latentlab.generators.process import EpsilonProcess, Model, adaptive
from latentlab.generators.samplers import SOLVERS
from latentlab.generators.time import T_NOISE, time_grid


def _euler_maruyama(process: VPSDE, model: Model, x: Tensor, steps: int,
                    generator: torch.Generator | None) -> Tensor:
    """Reverse SDE dx = [f - g^2 score] dt + g dw_bar from t = 1 to eps (Song et al. eq. 6).

    The last step adds no noise (Song et al.'s "denoise" of the final sample).
    """
    ts = time_grid(steps, T_NOISE, process.eps, device=x.device, dtype=x.dtype)
    for i, (t, t_next) in enumerate(zip(ts[:-1], ts[1:], strict=True)):
        dt = t_next - t  # < 0
        beta = process.beta(t)
        x = x + (-0.5 * beta * x - beta * process.score(model, x, t)) * dt
        if i < steps - 1:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + (beta * -dt).sqrt() * noise
    return x


def _probability_flow(process: VPSDE, model: Model, x: Tensor, steps: int,
                      generator: torch.Generator | None, solver: str = "heun") -> Tensor:
    """Probability-flow ODE dx/dt = -1/2 beta(t) (x + score) from t = 1 to eps (Song et al. eq. 13).

    `solver` is a key of `samplers.SOLVERS`.
    """

    field = process.ode_field(model)
    ts = time_grid(steps, T_NOISE, process.eps, device=x.device, dtype=x.dtype)
    return SOLVERS[solver](field, x, ts)


class VPSDE(EpsilonProcess):
    """VP-SDE with a linear beta(t); eps-prediction, sampled as a reverse SDE or an ODE.

    Args:
        beta_min, beta_max: beta(0) and beta(1).
        eps: smallest time used for training and where samplers stop.
    """

    samplers = {"euler_maruyama": _euler_maruyama, "ode": _probability_flow, "dopri5": adaptive}
    default_sampler = "euler_maruyama"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, eps: float = 1e-3):
        if not 0 < beta_min <= beta_max:
            raise ValueError(f"need 0 < beta_min <= beta_max, got {beta_min}, {beta_max}")
        if not 0 < eps < 1:
            raise ValueError(f"eps must be in (0, 1), got {eps}")
        self.beta_min, self.beta_max, self.eps = beta_min, beta_max, eps
        self.t_data = eps

    def __repr__(self) -> str:
        return f"VPSDE(beta_min={self.beta_min}, beta_max={self.beta_max}, eps={self.eps})"

    def beta(self, t: Tensor) -> Tensor:
        """beta(t), same shape as t."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        log_alpha = -0.5 * (self.beta_min * t + 0.5 * t**2 * (self.beta_max - self.beta_min))
        # sigma^2 = 1 - alpha^2 = -expm1(2 log alpha): accurate for small t
        return log_alpha.exp(), (-torch.expm1(2 * log_alpha)).sqrt()

    def sample_train_time(self, n, generator, device, dtype) -> Tensor:
        u = torch.rand(n, generator=generator, device=device, dtype=dtype)
        return self.eps + (1 - self.eps) * u

    def ode_field(self, model: Model) -> Field:
        """dx/dt = -1/2 beta(t) (x + score(x, t)) (Song et al. eq. 13)."""

        def field(x: Tensor, t: Tensor) -> Tensor:
            return -0.5 * self.beta(t) * (x + self.score(model, x, t))

        return field

    def score(self, model: Model, x: Tensor, t: Tensor) -> Tensor:
        """grad log p_t(x) = -eps_hat / sigma_t for a 0-d or (B,) time t."""
        _, sigma = self.coefficients(t)
        return -model(x, t) / sigma
