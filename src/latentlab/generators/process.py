"""The base of every continuous generative process: a Gaussian path from data to noise.

Every process here corrupts data the same way, x_t = alpha_t x_0 + sigma_t eps with eps ~ N(0, I),
and differs in its schedule (alpha_t, sigma_t), in what the network predicts (velocity or eps)
and in its samplers. Time follows `latentlab.generators.time`: t = 0 data, t = 1 noise. The
process holds the maths only; the network is any `Denoiser`.

Legend: B batch, D any trailing data dims.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from einops import rearrange
from torch import Tensor

from latentlab.generators.denoisers import Denoiser
from latentlab.generators.guidance import NullCond, guided
from latentlab.generators.likelihood import (
    TOLERANCE,
    Field,
    Likelihood,
    dopri5,
    log_likelihood,
)
from latentlab.generators.time import T_DATA, T_NOISE

log = logging.getLogger("latentlab")

Model = Callable[[Tensor, Tensor], Tensor]
"""What a sampler calls: the denoiser with labels and guidance bound, (x_t, t (B,)) -> pred."""


@dataclass(frozen=True)
class ProcessLoss:
    """The result of one training loss evaluation."""

    loss: Tensor
    """() mean of `per_item`; what to backpropagate."""
    t: Tensor
    """(B,) times drawn."""
    x_t: Tensor
    """(B, *D) noisy inputs the denoiser saw."""
    prediction: Tensor
    """(B, *D) the denoiser's output."""
    target: Tensor
    """(B, *D) what it should have output."""
    per_item: Tensor
    """(B,) squared error averaged over each item's elements."""


def per_batch(t: Tensor, x: Tensor) -> Tensor:
    """Reshape a (B,) tensor to broadcast against x (B, *D): (B, 1, ..., 1)."""
    return rearrange(t, "b -> b" + " 1" * (x.ndim - 1))


class Process(ABC):
    """A Gaussian path x_t = alpha_t x_0 + sigma_t eps with its loss and samplers.

    Subclasses define the schedule, the training time distribution, the regression target, the
    one-step x_0 estimate and a plain dict `samplers` from a name to a function
    `(process, model, x_T, steps, generator, **options) -> x_0`.
    """

    samplers: ClassVar[dict[str, Callable[..., Tensor]]]
    default_sampler: ClassVar[str]
    t_data: float = T_DATA
    """Where the path starts on the data side (and its samplers stop)."""

    def ode_field(self, model: Model) -> Field:
        """The probability-flow ODE dx/dt = f(x, t) of this process with the network `model`,
        which carries p_data at `t_data` to N(0, I) at t = 1. ValueError if it has none."""
        raise ValueError(f"{type(self).__name__} has no probability-flow ODE (flow and vpsde "
                         "have one)")

    @abstractmethod
    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(alpha_t, sigma_t), each (B,), for times t (B,)."""

    @abstractmethod
    def sample_train_time(
        self, n: int, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
    ) -> Tensor:
        """(n,) training times."""

    @abstractmethod
    def target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """(B, *D) what the denoiser regresses onto, given x0, noise (B, *D) and t (B,)."""

    @abstractmethod
    def x0_estimate(self, prediction: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """The one-step estimate of x_0 from x_t: E[x_0 | x_t] when the prediction is optimal.

        Args:
            prediction: (B, *D) denoiser output at (x_t, t).
            x_t: (B, *D) noisy input.
            t: (B,) times.

        Returns:
            (B, *D) estimate of x_0.
        """

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """x_t = alpha_t x0 + sigma_t noise, for x0, noise (B, *D) and t (B,)."""
        assert t.shape == (x0.shape[0],), f"t must be (B,), got {tuple(t.shape)}"
        alpha, sigma = self.coefficients(t)
        return per_batch(alpha, x0) * x0 + per_batch(sigma, x0) * noise

    def loss(
        self,
        denoiser: Denoiser,
        x0: Tensor,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> ProcessLoss:
        """Mean squared error between the denoiser's prediction and the process's target.

        Args:
            denoiser: the network.
            x0: (B, *D) data.
            cond: (B,) int64 labels, (B, L) int64 prompt ids, or None.
            generator: source of randomness for t and the noise.
        """
        t = self.sample_train_time(x0.shape[0], generator, x0.device, x0.dtype)  # (B,)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = self.add_noise(x0, noise, t)
        prediction = denoiser(x_t, t, cond)
        target = self.target(x0, noise, t)
        per_item = (prediction.float() - target.float()).pow(2).flatten(1).mean(1)  # (B,)
        return ProcessLoss(per_item.mean(), t, x_t, prediction, target, per_item)

    @torch.no_grad()
    def sample(
        self,
        denoiser: Denoiser,
        shape: tuple[int, ...],
        cond: Tensor | None = None,
        *,
        steps: int,
        sampler: str | None = None,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
        guidance: float | None = None,
        null_class: NullCond | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **options: Any,
    ) -> Tensor:
        """Draw samples by running `sampler` from noise (t = 1) to data (t = 0), without grad.

        Args:
            denoiser: the network.
            shape: (B, *D) of the samples.
            cond: (B,) int64 labels, (B, L) int64 prompt ids, or None.
            steps: number of sampler steps (network evaluations per step depend on the sampler).
            sampler: a key of `self.samplers`; None takes `self.default_sampler`.
            generator: randomness for the starting noise and stochastic samplers.
            noise: (B, *D) starting point; None draws N(0, I) from `generator`.
            guidance: classifier-free guidance scale (see `guidance.py`); None for none.
            null_class: the null condition for guidance (label of "no class", or the (L,) ids
                of the null prompt); None reads `denoiser.null_class`.
            device, dtype: of the drawn noise when `noise` is None (default: cond's device or
                CPU, float32).
            **options: sampler-specific options (e.g. `eta` for DDIM).

        Returns:
            (B, *D) samples.
        """
        sampler = sampler or self.default_sampler
        if sampler not in self.samplers:
            raise ValueError(
                f"{type(self).__name__} has no sampler {sampler!r}; "
                f"choose one of {', '.join(self.samplers)}"
            )
        if noise is None:
            if device is None:
                device = cond.device if cond is not None else "cpu"
            noise = torch.randn(shape, generator=generator, device=device,
                                dtype=dtype or torch.float32)
        assert tuple(noise.shape) == tuple(shape), (
            f"noise must have shape {tuple(shape)}, got {tuple(noise.shape)}")
        if cond is not None:
            assert cond.shape[0] == shape[0], (
                f"cond must be (B,) labels or (B, L) prompt ids, got {tuple(cond.shape)}")
        if guidance is not None:
            if cond is None:
                raise ValueError(
                    f"guidance={guidance} given for an unconditional call (cond=None); "
                    "classifier-free guidance needs class labels or prompts"
                )
            if null_class is None:
                null_class = getattr(denoiser, "null_class", None)
            if null_class is None:
                raise ValueError("guidance needs null_class (or a denoiser.null_class)")
            denoiser = guided(denoiser, guidance, null_class)

        def model(x: Tensor, t: Tensor) -> Tensor:
            return denoiser(x, t.expand(x.shape[0]), cond)

        return self.samplers[sampler](self, model, noise, steps, generator, **options)

    @torch.no_grad()
    def log_likelihood(self, denoiser: Denoiser, x: Tensor, cond: Tensor | None = None, *,
                       tol: float = TOLERANCE, probes: int | None = None,
                       generator: torch.Generator | None = None) -> Likelihood:
        """log p(x | cond) of the probability-flow ODE (see `likelihood.log_likelihood`), x
        (B, *D) at `t_data`; no guidance."""

        def model(x_t: Tensor, t: Tensor) -> Tensor:
            return denoiser(x_t, t.expand(x_t.shape[0]), cond)

        return log_likelihood(self.ode_field(model), x, self.t_data, T_NOISE, tol, probes,
                              generator)


def adaptive(process: Process, model: Model, x: Tensor, steps: int,
             generator: torch.Generator | None, tol: float = TOLERANCE) -> Tensor:
    """Integrate the probability-flow ODE from noise to `t_data` with dopri5 at tolerance `tol`
    (`steps` is not used: the solver picks its own); logs the evaluations it took."""
    out, nfe = dopri5(process.ode_field(model), x, T_NOISE, process.t_data, tol)
    log.info("dopri5 (tol %g): %d network evaluations", tol, nfe)
    return out


class EpsilonProcess(Process):
    """A process whose network predicts the noise eps (DDPM, VP-SDE)."""

    def target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        return noise

    def x0_estimate(self, prediction: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """x_0 = (x_t - sigma_t eps_hat) / alpha_t."""
        alpha, sigma = self.coefficients(t)
        return (x_t - per_batch(sigma, x_t) * prediction) / per_batch(alpha, x_t)
