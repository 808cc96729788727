"""Exact likelihoods and adaptive solving of the ODE processes, against closed forms and against
facebookresearch's `flow_matching` on the same network.

Gaussian data N(mu, s^2 I) keeps every marginal of both paths Gaussian, so the optimal network
is known in closed form and the likelihood the flow gives must equal the Gaussian's own.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from latentlab.generators.flow import FlowMatching
from latentlab.generators.likelihood import divergence, dopri5, log_likelihood
from latentlab.generators.samplers import euler
from latentlab.generators.time import time_grid
from latentlab.generators.vpsde import VPSDE

MU, S = 0.7, 0.4


def gaussian_log_prob(x: torch.Tensor, mean, var) -> torch.Tensor:
    """(B,) log N(x; mean, var I) summed over the item's dims."""
    var = torch.as_tensor(var, dtype=x.dtype)
    return (-0.5 * ((x - mean) ** 2 / var + torch.log(2 * math.pi * var))).flatten(1).sum(1)


class FlowOfGaussian(nn.Module):
    """The exact velocity of the linear path x_t = (1 - t) x0 + t eps for x0 ~ N(mu, s^2):
    x_t ~ N(m_t, v_t), m_t = (1 - t) mu, v_t = (1 - t)^2 s^2 + t^2, and
    v(x, t) = m_t' + v_t' / (2 v_t) (x - m_t)."""

    def forward(self, x, t, cond=None):
        t = t.reshape(-1, *([1] * (x.ndim - 1))).to(x)
        m, v = (1 - t) * MU, (1 - t) ** 2 * S**2 + t**2
        dv = -2 * (1 - t) * S**2 + 2 * t
        return -MU + dv / (2 * v) * (x - m)


class EpsOfGaussian(nn.Module):
    """The exact noise prediction of the VP-SDE for x0 ~ N(mu, s^2):
    eps_hat = sigma_t (x - alpha_t mu) / (alpha_t^2 s^2 + sigma_t^2)."""

    def __init__(self, process: VPSDE):
        super().__init__()
        self.process = process

    def forward(self, x, t, cond=None):
        alpha, sigma = self.process.coefficients(t.to(x))
        alpha, sigma = (c.reshape(-1, *([1] * (x.ndim - 1))) for c in (alpha, sigma))
        return sigma * (x - alpha * MU) / (alpha**2 * S**2 + sigma**2)


def data(n: int, dims=(2, 3), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (MU + S * torch.randn(n, *dims, generator=g)).double()


def test_the_flow_likelihood_of_gaussian_data_is_the_gaussians():
    x = data(16)
    found = FlowMatching().log_likelihood(FlowOfGaussian(), x, tol=1e-9)
    torch.testing.assert_close(found.nats, gaussian_log_prob(x, MU, S**2), rtol=0, atol=1e-5)
    assert found.estimator == "exact" and found.dims == 6 and found.nfe > 10
    bits = -gaussian_log_prob(x, MU, S**2) / (6 * math.log(2))
    torch.testing.assert_close(found.bits_per_dim, bits, rtol=0, atol=1e-5)


def test_the_vpsde_probability_flow_likelihood_is_the_gaussians_at_eps():
    # the likelihood takes N(0, I) for p_1; with beta_max 20 p_1 is N(0.005, 1 - 4e-5) here,
    # 0.01 nats off; beta_max 40 leaves alpha_1 = 4e-5 and an error below 1e-3
    process = VPSDE(beta_max=40.0)
    x = data(8)
    found = process.log_likelihood(EpsOfGaussian(process), x, tol=1e-9)
    alpha, sigma = (c.double() for c in process.coefficients(torch.tensor(process.eps)))
    want = gaussian_log_prob(x, alpha * MU, alpha**2 * S**2 + sigma**2)
    torch.testing.assert_close(found.nats, want, rtol=0, atol=1e-3)


def test_hutchinson_agrees_with_the_exact_divergence_in_expectation():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 6)).double()

    def f(x, t):
        return net(x.flatten(1)).view_as(x) * (1 + t)

    x, t = data(4), torch.tensor(0.3, dtype=torch.float64)
    _, exact = divergence(f, x, t)
    k = 1000
    probes = (torch.randint(0, 2, (k, *x.shape)) * 2 - 1).double()
    per_probe = torch.stack([divergence(f, x, t, probes[i:i + 1])[1] for i in range(k)])
    mean, se = per_probe.mean(0), per_probe.std(0) / math.sqrt(k)
    assert ((mean - exact).abs() < 4 * se).all(), (mean, exact, se)
    assert (se > 0).all()  # not exact by accident: the estimate does vary
    # the probes averaged inside one call give the same mean
    torch.testing.assert_close(divergence(f, x, t, probes)[1], mean)


def test_a_hutchinson_likelihood_is_close_to_the_exact_one():
    x = data(64)
    exact = log_likelihood(FlowOfGaussian(), x, 0.0, tol=1e-7)
    rough = log_likelihood(FlowOfGaussian(), x, 0.0, tol=1e-7, probes=2,
                           generator=torch.Generator().manual_seed(0))
    assert rough.estimator == "hutchinson-2"
    error = rough.nats - exact.nats
    assert abs(float(error.mean())) < 4 * float(error.std()) / 8 + 1e-9


def test_dopri5_carries_noise_to_the_data_gaussian_as_fine_euler_does():
    process, model = FlowMatching(), FlowOfGaussian()
    noise = torch.randn(4000, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = process.sample(model, noise.shape, noise=noise, steps=1, sampler="dopri5", tol=1e-7)
    assert abs(float(out.mean()) - MU) < 0.02 and abs(float(out.std()) - S) < 0.02
    fine = process.sample(model, noise.shape, noise=noise, steps=500, sampler="euler")
    torch.testing.assert_close(out, fine, rtol=0, atol=1e-2)  # Euler's O(1/500)
    _, nfe = dopri5(lambda x, t: model(x, t.expand(len(x))), noise, 1.0, 0.0, 1e-3)
    assert 6 <= nfe < 200


def test_processes_without_an_ode_say_so():
    from latentlab.generators.ddpm import DDPM

    with pytest.raises(ValueError, match="no probability-flow ODE"):
        DDPM().log_likelihood(FlowOfGaussian(), data(2))


class Net(nn.Module):
    """A small fixed network of (x, t): what both libraries are given."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.body = nn.Sequential(nn.Linear(5, 32), nn.SiLU(), nn.Linear(32, 4))

    def forward(self, x, t, cond=None):
        return self.body(torch.cat([x, t.reshape(-1, 1).expand(len(x), 1).to(x)], dim=1))


def test_path_euler_and_likelihood_agree_with_facebookresearch_flow_matching():
    from flow_matching.path import AffineProbPath
    from flow_matching.path.scheduler import CondOTScheduler
    from flow_matching.solver import ODESolver
    from flow_matching.utils import ModelWrapper

    net = Net().double()

    class Theirs(ModelWrapper):
        """Their time runs noise (0) -> data (1), ours data (0) -> noise (1): t = 1 - s, and
        their velocity is minus ours."""

        def forward(self, x, t, **extras):
            return -self.model(x, (1 - t).expand(len(x)))

    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(8, 4, generator=g).double(), torch.randn(8, 4, generator=g).double()
    t = torch.rand(8, generator=g).double()
    path = AffineProbPath(scheduler=CondOTScheduler()).sample(x_0=eps, x_1=x0, t=1 - t)
    process = FlowMatching()
    torch.testing.assert_close(process.add_noise(x0, eps, t), path.x_t)
    torch.testing.assert_close(process.target(x0, eps, t), -path.dx_t)

    solver = ODESolver(velocity_model=Theirs(net))
    theirs = solver.sample(x_init=eps, step_size=0.05, method="euler")
    ours = euler(lambda x, s: net(x, s.expand(len(x))), eps, time_grid(20, dtype=torch.float64))
    torch.testing.assert_close(ours, theirs)

    _, their_log_p = solver.compute_likelihood(
        x_1=x0, log_p0=lambda z: gaussian_log_prob(z, 0.0, torch.tensor(1.0)), step_size=None,
        method="dopri5", atol=1e-9, rtol=1e-9, exact_divergence=True)
    found = process.log_likelihood(net, x0, tol=1e-9)
    torch.testing.assert_close(found.nats, their_log_p, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_evaluate_reports_the_rate_of_a_trained_flow_and_it_prefers_the_data(tmp_path):
    from latentlab.evaluation.likelihood import latent_rate
    from latentlab.generation.generator import Generator
    from latentlab.generation.train import train_generator
    from tests.test_generation import MIXTURE, mixture_run

    train_generator(mixture_run("flow", steps=200), tmp_path / "run")
    generator = Generator.load(tmp_path / "run")
    rate = latent_rate(generator, MIXTURE, items=32, tol=1e-3)
    assert rate["nll_estimator"] == "exact" and rate["nll_items"] == 32
    assert rate["nll_condition"] == "label" and rate["nll_of"] == "data"
    # points off the data's circle are far less likely than held-out data
    noise = torch.randn(32, 10, generator=torch.Generator().manual_seed(0))
    off = generator.process.log_likelihood(generator.network, noise,
                                           torch.zeros(32, dtype=torch.int64), tol=1e-3)
    assert float(off.bits_per_dim.mean()) > rate["nll_bits_per_dim"] + 1.0
    assert 0 < rate["nll_bits_per_dim_se"] < 1.0
