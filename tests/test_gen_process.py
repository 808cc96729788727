"""Continuous processes against analytic answers on Gaussian data.

For data x_0 ~ N(mu, s^2 I) and x_t = a x_0 + b eps, x_t ~ N(a mu, v I) with v = a^2 s^2 + b^2, and
  E[x_0 | x_t] = mu + (a s^2 / v) (x_t - a mu),   E[eps | x_t] = (b / v) (x_t - a mu),
so the optimal eps-prediction (DDPM, VP-SDE) and the optimal flow velocity E[eps - x_0 | x_t] are
linear in x_t. Each process exposes (a, b) as `coefficients(t)`.
"""

from __future__ import annotations

import pytest
import torch

from latentlab.generators import DDPM, PROCESSES, VPSDE, FlowMatching
from latentlab.generators.ddpm import cosine_betas, linear_betas
from latentlab.generators.time import T_DATA, T_NOISE, sample_time

MU = torch.tensor([1.0, -0.5])
S = 0.5
N = 20_000


def posterior(process, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(E[x_0 | x_t], E[eps | x_t]) for Gaussian data N(MU, S^2 I)."""
    a, b = process.coefficients(t)
    a, b = a[:, None], b[:, None]
    v = a**2 * S**2 + b**2
    r = x - a * MU
    return MU + a * S**2 / v * r, b / v * r


def optimal_denoiser(process):
    def denoiser(x, t, cond):
        x0, eps = posterior(process, x, t)
        return eps - x0 if isinstance(process, FlowMatching) else eps

    return denoiser


def gaussian_data(n: int, seed: int = 0) -> torch.Tensor:
    return MU + S * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))


ALL = [FlowMatching(), DDPM("linear"), DDPM("cosine"), VPSDE()]


# ---- the time convention, pinned once: data at t = 0, noise at t = 1 -------------------------

def test_time_convention():
    assert (T_DATA, T_NOISE) == (0.0, 1.0)
    t = torch.tensor([0.0, 1.0])
    for process in ALL:
        alpha, sigma = process.coefficients(t)
        assert alpha[0].item() == pytest.approx(1.0) and sigma[0].item() == pytest.approx(0.0)
        assert alpha[1].item() < 0.01 and sigma[1].item() == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("process", ALL, ids=repr)
def test_samplers_run_from_noise_to_data(process):
    for sampler in process.samplers:
        seen = []

        def denoiser(x, t, cond, seen=seen):
            seen.append(t[0].item())
            return torch.zeros_like(x)

        process.sample(denoiser, (2, 2), steps=4, sampler=sampler)
        assert seen[0] == pytest.approx(1.0) and seen[-1] < 0.3, (sampler, seen)
        assert all(0.0 <= s <= 1.0 for s in seen)


def test_flow_path_end_points_and_target():
    flow = FlowMatching()
    x0, noise = gaussian_data(4), torch.randn(4, 2)
    torch.testing.assert_close(flow.add_noise(x0, noise, torch.zeros(4)), x0)
    torch.testing.assert_close(flow.add_noise(x0, noise, torch.ones(4)), noise)
    torch.testing.assert_close(flow.target(x0, noise, torch.rand(4)), noise - x0)


@pytest.mark.parametrize("kind", ["uniform", "logit_normal"])
def test_sample_time(kind):
    t = sample_time(10_000, kind, torch.Generator().manual_seed(0))
    assert t.shape == (10_000,) and t.min() > 0 and t.max() < 1
    assert t.mean().item() == pytest.approx(0.5, abs=0.02)  # both are symmetric about 1/2
    assert torch.equal(t, sample_time(10_000, kind, torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="uniform"):
        sample_time(3, "beta")


# ---- schedules ----------------------------------------------------------------------------

@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_ddpm_schedule(schedule):
    ddpm = DDPM(schedule, timesteps=1000)
    ab = ddpm.alphas_bar
    assert ab[0] == 1.0 and (ab[1:] > 0).all() and (ab[1:] < 1).all()
    assert (ab[1:] < ab[:-1]).all()  # strictly decreasing
    assert ab[-1] < 1e-4


def test_betas():
    betas = linear_betas(1000)
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    assert cosine_betas(1000).max().item() == pytest.approx(0.999)  # the last step is clipped


def test_ddpm_add_noise_moments():
    ddpm = DDPM("linear")
    k = 300
    x0 = torch.tensor([[2.0, -1.0]]).expand(200_000, 2)
    t = torch.full((200_000,), k / ddpm.timesteps)
    x_t = ddpm.add_noise(x0, torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)), t)
    ab = ddpm.alphas_bar[k].item()
    torch.testing.assert_close(x_t.mean(0), ab**0.5 * x0[0], atol=0.01, rtol=0)
    torch.testing.assert_close(x_t.var(0), torch.full((2,), 1 - ab), atol=0.01, rtol=0)


def test_vpsde_alpha_is_exp_of_integrated_beta():
    vp = VPSDE()
    t = torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64)
    grid = torch.linspace(0, 1, 100_001, dtype=torch.float64)
    cumulative = torch.cumulative_trapezoid(vp.beta(grid), grid)  # int_0^t beta
    expected = torch.exp(-0.5 * cumulative[(t * 100_000).long() - 1])
    alpha, sigma = vp.coefficients(t)
    torch.testing.assert_close(alpha, expected)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones(3, dtype=torch.float64))


# ---- the optimal denoiser --------------------------------------------------------------------

@pytest.mark.parametrize("process", ALL, ids=repr)
def test_x0_estimate_of_optimal_denoiser_is_posterior_mean(process):
    t = process.sample_train_time(64, torch.Generator().manual_seed(1), "cpu", torch.float32)
    x_t = process.add_noise(gaussian_data(64), torch.randn(64, 2), t)
    estimate = process.x0_estimate(optimal_denoiser(process)(x_t, t, None), x_t, t)
    # near t = 1 the eps-processes divide by alpha ~ 0.007: float32 round-off grows accordingly
    torch.testing.assert_close(estimate, posterior(process, x_t, t)[0], atol=2e-3, rtol=1e-4)


def analytic_min_loss(process) -> float:
    """E_t of the per-element posterior variance of the target, for N(MU, S^2 I) data."""
    if isinstance(process, DDPM):
        t = torch.arange(1, process.timesteps + 1, dtype=torch.float64) / process.timesteps
    else:
        lo = process.eps if isinstance(process, VPSDE) else 0.0
        t = lo + (1 - lo) * (torch.arange(100_000, dtype=torch.float64) + 0.5) / 100_000
    a, b = process.coefficients(t)
    v = a**2 * S**2 + b**2
    if isinstance(process, FlowMatching):  # Var(eps - x_0 | x_t), Cov(eps - x_0, x_t) = b - a s^2
        var = 1 + S**2 - (b - a * S**2) ** 2 / v
    else:  # Var(eps | x_t)
        var = a**2 * S**2 / v
    return var.mean().item()


@pytest.mark.parametrize("process", ALL, ids=repr)
def test_loss_at_optimal_denoiser_is_analytic_minimum(process):
    out = process.loss(optimal_denoiser(process), gaussian_data(100_000),
                       generator=torch.Generator().manual_seed(0))
    assert out.per_item.shape == out.t.shape == (100_000,)
    assert out.x_t.shape == out.prediction.shape == out.target.shape == (100_000, 2)
    torch.testing.assert_close(out.loss, out.per_item.mean())
    # the estimate averages 100k items: its relative standard error is well under 1%
    assert out.loss.item() == pytest.approx(analytic_min_loss(process), rel=0.03)
    worse = process.loss(lambda x, t, c: 1.1 * optimal_denoiser(process)(x, t, c),
                         gaussian_data(100_000), generator=torch.Generator().manual_seed(0))
    assert worse.loss > out.loss


# ---- every sampler reaches the data distribution with the optimal denoiser -----------------

SAMPLERS = [
    (FlowMatching(), "euler", 100, {}),
    (FlowMatching(), "heun", 20, {}),
    (FlowMatching(), "midpoint", 20, {}),
    (DDPM("linear"), "ancestral", 1000, {}),
    (DDPM("cosine"), "ancestral", 1000, {}),
    (DDPM("linear"), "ddim", 200, {"eta": 0.0}),
    (DDPM("cosine"), "ddim", 100, {"eta": 0.0}),
    (DDPM("linear"), "ddim", 500, {"eta": 1.0}),
    (VPSDE(), "euler_maruyama", 500, {}),
    (VPSDE(), "ode", 50, {"solver": "heun"}),
    (VPSDE(), "ode", 200, {"solver": "euler"}),
]


@pytest.mark.parametrize("process,sampler,steps,options", SAMPLERS,
                         ids=[f"{p!r}-{s}-{n}-{o}" for p, s, n, o in SAMPLERS])
def test_sampler_reaches_gaussian_target(process, sampler, steps, options):
    x = process.sample(optimal_denoiser(process), (N, 2), steps=steps, sampler=sampler,
                       generator=torch.Generator().manual_seed(0), **options)
    # with 20k samples the standard error is 0.0035 on the mean and 0.0025 on the variance 0.25;
    # the tolerances are ~6 standard errors, leaving ~0.01 for the discretisation bias
    torch.testing.assert_close(x.mean(0), MU, atol=0.025, rtol=0)
    torch.testing.assert_close(x.var(0), torch.full((2,), S**2), atol=0.02, rtol=0)


def test_a_wrong_denoiser_misses_the_target():
    # guards the test above: a denoiser for N(0, 1) data must not pass it
    flow = FlowMatching()
    x = flow.sample(lambda x, t, c: torch.zeros_like(x), (N, 2), steps=10,
                    generator=torch.Generator().manual_seed(0))
    assert (x.mean(0) - MU).abs().max() > 0.1


# ---- determinism -------------------------------------------------------------------------------

DETERMINISTIC = [(FlowMatching(), s, {}) for s in FlowMatching.samplers] + [
    (DDPM("linear"), "ddim", {"eta": 0.0}),
    (VPSDE(), "ode", {}),
]


@pytest.mark.parametrize("process,sampler,options", DETERMINISTIC,
                         ids=[f"{p!r}-{s}" for p, s, _ in DETERMINISTIC])
def test_deterministic_samplers(process, sampler, options):
    noise = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    run = lambda seed: process.sample(  # noqa: E731
        optimal_denoiser(process), (8, 2), steps=10, sampler=sampler, noise=noise,
        generator=torch.Generator().manual_seed(seed), **options)
    assert torch.equal(run(1), run(2))


STOCHASTIC = [(DDPM(), "ancestral", {}), (DDPM(), "ddim", {"eta": 1.0}),
              (VPSDE(), "euler_maruyama", {})]


@pytest.mark.parametrize("process,sampler,options", STOCHASTIC,
                         ids=[f"{p!r}-{s}" for p, s, _ in STOCHASTIC])
def test_stochastic_samplers_reproduce_with_their_generator(process, sampler, options):
    noise = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    run = lambda seed: process.sample(  # noqa: E731
        optimal_denoiser(process), (8, 2), steps=10, sampler=sampler, noise=noise,
        generator=torch.Generator().manual_seed(seed), **options)
    assert torch.equal(run(0), run(0)) and not torch.equal(run(0), run(1))


def test_ddim_with_eta_one_is_the_ancestral_sampler():
    # the DDPM posterior q(x_k' | x_k, x0_hat) is DDIM's eta = 1 member (Song et al. 2021, eq. 16)
    ddpm = DDPM("cosine", timesteps=100)
    run = lambda s, **o: ddpm.sample(optimal_denoiser(ddpm), (16, 2), steps=25, sampler=s,  # noqa: E731
                                     generator=torch.Generator().manual_seed(0), **o)
    torch.testing.assert_close(run("ancestral"), run("ddim", eta=1.0), atol=1e-4, rtol=1e-4)


# ---- interface ---------------------------------------------------------------------------------

def test_registry_and_errors():
    assert set(PROCESSES) == {"flow", "ddpm", "vpsde"}
    with pytest.raises(ValueError, match="euler"):
        FlowMatching().sample(optimal_denoiser(FlowMatching()), (2, 2), steps=2, sampler="rk4")
    with pytest.raises(ValueError, match="steps"):
        DDPM(timesteps=10).sample(lambda x, t, c: x, (2, 2), steps=11)
    with pytest.raises(ValueError):
        DDPM("quadratic")
    with pytest.raises(ValueError):
        FlowMatching("beta")


def test_sample_takes_dtype_from_noise():
    noise = torch.randn(4, 2, dtype=torch.float64)
    for process in ALL:
        out = process.sample(optimal_denoiser(process), (4, 2), steps=3, noise=noise)
        assert out.dtype == torch.float64 and out.shape == (4, 2)
