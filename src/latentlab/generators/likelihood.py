"""Adaptive ODE solving and exact likelihoods of the ODE processes, through torchdiffeq.

Flow matching and the VP-SDE's probability flow are continuous normalizing flows (Chen et al.
2018; Song et al. 2021, section 4.3): a vector field f(x, t) carries the data at t = t0 (0, or
the VP-SDE's eps) to N(0, I) at t = 1. Along a trajectory the density obeys the instantaneous
change of variables, d log p_t(x_t) / dt = -div f(x_t, t), so

    log p_t0(x) = log N(x_1; 0, I) + int_t0^1 div f(x_t, t) dt,

integrated with x from data to noise by dopri5 (Dormand-Prince 5(4), adaptive steps, the
tolerances given). The divergence is exact (one vector-Jacobian product per dimension) for small
items, else Hutchinson's estimator E_v[v^T (df/dx) v] with Rademacher probes v, drawn once per
solve (FFJORD, Grathwohl et al. 2019): unbiased, its spread reported by the caller.

What this is a likelihood of: the generator's density of the latent it models (the tokenizer's
normalised latent), in nats; bits per dimension divide by D ln 2. It is not a likelihood of
images: a decoder from d latent to D > d pixel dimensions is no bijection, so no change of
variables carries it to the data.

Legend: B batch, D any trailing data dims, d = prod(D), K probes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

Field = Callable[[Tensor, Tensor], Tensor]
"""f(x (B, *D), t 0-d) -> dx/dt (B, *D)."""

EXACT_MAX_DIMS = 64
"""Items of at most this many dimensions get the exact divergence (d vector-Jacobian products
per evaluation); larger ones Hutchinson's estimate."""
TOLERANCE = 1e-5
"""Default relative and absolute tolerance of dopri5."""


class Counted:
    """A vector field that counts its evaluations (`nfe`)."""

    def __init__(self, f: Field):
        self.f, self.nfe = f, 0

    def __call__(self, t: Tensor, x: Tensor) -> Tensor:  # torchdiffeq's argument order
        self.nfe += 1
        return self.f(x, t)


def dopri5(f: Field, x: Tensor, t0: float, t1: float, tol: float = TOLERANCE
           ) -> tuple[Tensor, int]:
    """Integrate dx/dt = f from t0 to t1 with adaptive Dormand-Prince steps.

    Returns:
        (B, *D) the state at t1, and the number of field evaluations used.
    """
    from torchdiffeq import odeint

    lo, hi = min(t0, t1), max(t0, t1)
    # the solver's trial steps may reach past t1 (it interpolates back): the field is never
    # asked outside [t0, t1], where a process may be undefined (the VP-SDE below its eps)
    field = Counted(lambda x, t: f(x, t.clamp(lo, hi)))
    ts = torch.tensor([t0, t1], dtype=torch.float64 if x.dtype == torch.float64
                      else torch.float32, device=x.device)
    out = odeint(field, x, ts, method="dopri5", rtol=tol, atol=tol)
    return out[-1], field.nfe


def divergence(f: Field, x: Tensor, t: Tensor, probes: Tensor | None = None
               ) -> tuple[Tensor, Tensor]:
    """f(x, t) and its divergence per item (B,): exact when `probes` is None, else the mean of
    v^T (df/dx) v over the K probes (K, B, *D)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        out = f(x, t)
        flat = out.flatten(1)
        if probes is None:
            div = torch.zeros(len(x), dtype=out.dtype, device=out.device)
            for i in range(flat.shape[1]):
                (g,) = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=True)
                div = div + g.flatten(1)[:, i]
        else:
            div = 0
            for v in probes:
                (g,) = torch.autograd.grad(out, x, v, retain_graph=True)
                div = div + (g * v).flatten(1).sum(1)
            div = div / len(probes)
    return out.detach(), div.detach()


@dataclass(frozen=True)
class Likelihood:
    """`log_likelihood`'s result."""

    nats: Tensor
    """(B,) log p(x) per item, in nats."""
    dims: int
    """Dimensions d of one item."""
    estimator: str
    """"exact" or "hutchinson-K" (K probes)."""
    nfe: int
    """Field evaluations of the adaptive solve."""

    @property
    def bits_per_dim(self) -> Tensor:
        """(B,) -log2 p(x) / d."""
        return -self.nats / (self.dims * math.log(2))


def log_likelihood(f: Field, x: Tensor, t0: float, t1: float = 1.0, tol: float = TOLERANCE,
                   probes: int | None = None, generator: torch.Generator | None = None
                   ) -> Likelihood:
    """log p_t0(x) of the flow dx/dt = f(x, t) that carries p_t0 to N(0, I) at t1.

    Args:
        f: the vector field.
        x: (B, *D) items at t0, in float32 or float64.
        t0, t1: the data and the noise ends of the flow.
        tol: dopri5's relative and absolute tolerance.
        probes: Hutchinson probes per item; None: exact up to `EXACT_MAX_DIMS` dimensions, else
            4 probes.
        generator: the probes' randomness.
    """
    dims = math.prod(x.shape[1:])
    if probes is None and dims > EXACT_MAX_DIMS:
        probes = 4
    noise = None
    if probes is not None:
        shape = (probes, *x.shape)
        noise = torch.randint(0, 2, shape, generator=generator, device="cpu").to(x) * 2 - 1

    def augmented(state: Tensor, t: Tensor) -> Tensor:
        out, div = divergence(f, state[:, :dims].reshape(x.shape), t, noise)
        return torch.cat([out.flatten(1), div[:, None]], dim=1)

    start = torch.cat([x.flatten(1), torch.zeros(len(x), 1, dtype=x.dtype, device=x.device)], 1)
    end, nfe = dopri5(augmented, start, t0, t1, tol)
    z, integral = end[:, :dims], end[:, dims]
    prior = -0.5 * (z.pow(2).sum(1) + dims * math.log(2 * math.pi))
    estimator = "exact" if probes is None else f"hutchinson-{probes}"
    return Likelihood(prior + integral, dims, estimator, nfe)
