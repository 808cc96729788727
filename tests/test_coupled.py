"""The coupled recipe's parts that make its claims checkable: tiny DiTs that are the big DiT in
miniature, held-out tiny losses, the distortion options and their scale, annealing, and FLOP
counts against the analytic count of a DiT's matmuls."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from latentlab.data import load_dataset
from latentlab.generators.denoisers.dit import DiT, DiTBlock, DiTConfig
from latentlab.nn import num_parameters
from latentlab.recipes.config import CoupledConfig
from latentlab.recipes.coupled import LatentCoupling, round_trip
from latentlab.recipes.tiny import BigGenerator, binned_losses, tiny_generator
from latentlab.recipes.train import build_objective
from latentlab.tokenizers.bottlenecks import BottleneckConfig, KLConfig
from latentlab.tokenizers.bottlenecks.vq import VQConfig
from latentlab.training.flops import counted_flops
from tests.conftest import tiny_run_config

BIG = DiTConfig(patch_size=2, width=128, depth=4, heads=4)
SHAPE = (2, 4, 4)
CLASSES = 10


def big_dit() -> DiT:
    return DiT(BIG, SHAPE[0], SHAPE[1], CLASSES)


def coupling(**overrides) -> LatentCoupling:
    cfg = CoupledConfig(widths=(32, 64, 96), depth=1, fit_every=10, start=0, ramp=5,
                        **overrides)
    torch.manual_seed(0)
    return LatentCoupling(cfg, SHAPE, "flow", BigGenerator(10**6, 4e5, BIG, CLASSES), steps=100,
                          batch=64)


# -- tiny generators that are the big one in miniature -----------------------------------------

def test_tiny_dits_share_the_big_dits_patching_depth_heads_and_conditioning():
    big = big_dit()
    tiny = coupling(tiny="dit").tiny
    for module, width in zip(tiny, (32, 64, 96), strict=True):
        net = module.net
        assert isinstance(net, DiT) and net.cfg.width == width
        for field in ("patch_size", "depth", "mlp_ratio"):
            assert getattr(net.cfg, field) == getattr(BIG, field), field
        for field in ("num_classes", "input_size", "in_channels"):
            assert getattr(net, field) == getattr(big, field), field
        assert net.cfg.width // net.cfg.heads == BIG.width // BIG.heads  # the head width
        # the same blocks in the same order, with the same parameter shapes up to width
        kinds = [type(m).__name__ for m in net.modules()]
        assert kinds == [type(m).__name__ for m in big.modules()]
        assert sum(isinstance(m, DiTBlock) for m in net.modules()) == BIG.depth
        assert net.null_class == big.null_class == 10


def test_tiny_dit_sizes_follow_the_width_series():
    """Every matrix of a DiT block is width x width (times a constant), so past the fixed-size
    parts (time frequencies, patch embedding, class table) parameters grow as width^2."""
    sizes = [num_parameters(m) for m in coupling(tiny="dit").tiny]
    assert sizes == sorted(sizes)
    # the exact count of a DiT at width d: a d^2 + b d + c; three widths determine it, and a
    # fourth (the big one) must follow
    w = torch.tensor([32.0, 64.0, 96.0], dtype=torch.float64)
    a, b, c = torch.linalg.solve(torch.stack([w**2, w, torch.ones(3, dtype=torch.float64)], 1),
                                 torch.tensor(sizes, dtype=torch.float64))
    assert float(a * 128**2 + b * 128 + c) == pytest.approx(num_parameters(big_dit()), abs=0.5)
    # per block 4 d^2 (attention) + 8 d^2 (MLP) + 6 d^2 (adaLN); the final adaLN 2 d^2 and the
    # time MLP's second layer d^2
    assert float(a) == pytest.approx(18 * BIG.depth + 3)


def test_tiny_dit_takes_and_gives_flat_latents_and_needs_a_dit_big_generator():
    model = tiny_generator(SHAPE, 32, 1, dit=BIG, num_classes=CLASSES)
    x, t = torch.randn(5, math.prod(SHAPE)), torch.rand(5)
    assert model(x, t, None).shape == (5, math.prod(SHAPE))
    with pytest.raises(ValueError, match="not a DiT"):
        LatentCoupling(CoupledConfig(tiny="dit"), SHAPE, "flow", BigGenerator(10**6))
    with pytest.raises(ValueError, match="head width 32"):
        tiny_generator(SHAPE, 48, 1, dit=BIG, num_classes=CLASSES)


# -- held-out tiny losses ----------------------------------------------------------------------

def test_heldout_losses_come_from_latents_the_tiny_generators_never_train_on(monkeypatch):
    """The tiny phases train on what the autoencoder phase hands on: the training batch. The
    held-out scoring sees the test items, and nothing it scores is ever handed on."""
    cfg = dataclasses.replace(tiny_run_config(), recipe="coupled", coupled=CoupledConfig(
        widths=(8, 16, 32), depth=1, fit_every=2, start=0, big_parameters=10**5, heldout=32))
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    objective = build_objective(cfg, train, heldout=test)
    held = test.__getitems__(list(range(32))).x
    assert torch.equal(objective.heldout, held)

    encoded: list[torch.Tensor] = []
    encode = objective.tokenizer.encode
    monkeypatch.setattr(objective.tokenizer, "encode",
                        lambda x: encoded.append(x) or encode(x))
    batch = train.__getitems__(list(range(16)))
    for step in range(5):
        handed = {"autoencoder": objective("autoencoder", batch, step, {}).handed}
        for phase in objective.coupling.phases:
            objective(phase, batch, step, handed)
        # everything the tiny phases trained on at this step came from the training batch
        latents, prompts = handed["autoencoder"]
        assert latents.shape[0] == len(batch.x) and prompts is None  # digits: no captions
    heldout_calls = [x for x in encoded if x.shape[0] == 32]
    assert len(heldout_calls) == 2  # steps 2 and 4
    assert all(torch.equal(x, held) for x in heldout_calls)
    # and no training image is a held-out image
    flat = lambda v: {tuple(r.tolist()) for r in v.flatten(1)}  # noqa: E731
    assert not flat(held) & flat(train.__getitems__(list(range(len(train)))).x)
    tracker = objective.coupling.tracker
    assert tracker.observed and tracker.seen[-1] == 4 * cfg.train.batch_size


# -- what the tiny phases train on -------------------------------------------------------------

def coupled_objective(bottleneck: BottleneckConfig, channels: int):
    cfg = tiny_run_config()
    cfg = dataclasses.replace(cfg, recipe="coupled", coupled=CoupledConfig(
        widths=(8, 16, 32), depth=1, fit_every=2, start=0, ramp=1, big_parameters=10**5),
        model=dataclasses.replace(cfg.model, latent_channels=channels, bottleneck=bottleneck))
    torch.manual_seed(0)
    return build_objective(cfg, load_dataset("digits", "train"))


@pytest.mark.parametrize("bottleneck, channels", [
    (KLConfig(), 2),
    (VQConfig(codebook_size=16), 4)])
def test_a_tiny_phase_depends_on_the_latents_it_is_given_not_on_earlier_phases(bottleneck,
                                                                              channels):
    """Given the same latents, a tiny phase has the same loss, gradient and tracked values
    whether it runs alone or after steps of every phase and another batch's autoencoder phase."""
    base = coupled_objective(bottleneck, channels)
    data = load_dataset("digits", "train")
    batch, other = data.__getitems__(list(range(16))), data.__getitems__(list(range(16, 32)))
    given = copy.deepcopy(base)("autoencoder", batch, 0, {}).handed
    alone, busy = copy.deepcopy(base), copy.deepcopy(base)
    for step in range(3):  # three whole steps on another batch (step 2 refits the law)
        handed = {"autoencoder": busy("autoencoder", other, step, {}).handed}
        for phase in busy.coupling.phases:
            busy(phase, other, step, handed)
    assert not torch.equal(busy("autoencoder", other, 3, {}).handed[0], given[0])
    busy.zero_grad()
    results = []
    for objective in (alone, busy):
        torch.manual_seed(1)
        out = objective("tiny_16", batch, 3, {"autoencoder": given})
        out.loss.backward()
        grads = [p.grad for p in objective.coupling.tiny[1].parameters()]
        results.append((out.loss, grads, objective.coupling.tracker.pending[:, 1]))
    (loss_a, grads_a, pending_a), (loss_b, grads_b, pending_b) = results
    assert torch.equal(loss_a, loss_b) and loss_a > 0
    assert all(torch.equal(g, h) for g, h in zip(grads_a, grads_b, strict=True))
    assert torch.equal(pending_a, pending_b) and pending_a[1].sum() > 0


def test_binned_losses_use_the_same_draws_for_every_model():
    x0 = torch.randn(40, 6)
    process = coupling().process
    zero = lambda x, t, c: torch.zeros_like(x)  # noqa: E731
    a, b = binned_losses(process, zero, x0, 4), binned_losses(process, zero, x0, 4)
    assert torch.equal(a, b) and a.shape == (4,)
    # a model that predicts the flow target exactly from (x_t, t) and x0 scores 0 in every bin
    tt = lambda t: t[:, None]  # noqa: E731
    exact = lambda x, t, c: (x - (1 - tt(t)) * x0) / tt(t) - x0  # noqa: E731  eps - x0

    assert binned_losses(process, exact, x0, 4).abs().max() < 1e-6


# -- the distortion options --------------------------------------------------------------------

def distortion_scale(c: LatentCoupling, rho: float, seed: int = 0) -> torch.Tensor:
    """(R,) norm of the move of 64 latents at a fixed rho (same draws for every call)."""
    c.cfg = dataclasses.replace(c.cfg, rho=rho)
    torch.manual_seed(seed)
    return c.move(torch.randn(64, math.prod(SHAPE)), step=10).norm(dim=1)


@pytest.mark.parametrize("kind", ["onestep", "gaussian"])
def test_onestep_and_gaussian_moves_scale_exactly_with_rho(kind):
    c = coupling(distortion=kind)
    full = distortion_scale(c, 1.0)
    assert (full > 0).all()
    for rho in (0.0, 0.25, 0.7):
        if kind == "onestep":
            torch.testing.assert_close(distortion_scale(c, rho), rho * full)
        else:  # fresh Gaussian draws: the same scale on average over items and draws
            ratio = torch.stack([distortion_scale(c, rho, seed=s) for s in range(30)]).mean()
            expected = rho * torch.stack([distortion_scale(c, 1.0, seed=s)
                                          for s in range(30)]).mean()
            assert float(ratio) == pytest.approx(float(expected), rel=1e-5, abs=1e-7)


def test_gaussian_move_has_the_onestep_error_scale_and_no_direction():
    onestep, gaussian = coupling(distortion="onestep"), coupling(distortion="gaussian")
    a, b = distortion_scale(onestep, 1.0), distortion_scale(gaussian, 1.0)
    assert float(b.mean() / a.mean()) == pytest.approx(1.0, rel=0.1)  # E|N(0, s^2 I)| ~ s


def test_ode_move_grows_with_rho_and_vanishes_for_a_perfect_model():
    c = coupling(distortion="ode", ode_steps=6)
    scales = [float(distortion_scale(c, r).mean()) for r in (0.0, 0.2, 0.5, 1.0)]
    assert scales[0] == 0 and all(a < b for a, b in zip(scales, scales[1:], strict=False))
    # a field that is exact for a point mass at x0 = 0 (x_t = t eps): the round trip returns x0
    point = lambda x, t, cond: x / t[:, None]  # noqa: E731  v = eps - x0 = x_t / t
    x0 = torch.zeros(8, 5)
    assert round_trip(c.process, point, x0, 6).abs().max() < 1e-5


def test_annealing_reaches_clean_latents_at_the_end():
    c = coupling(anneal=0.3)
    assert c.anneal(0) == 1.0 and c.anneal(69) == 1.0
    assert c.anneal(84) == pytest.approx(0.5, abs=0.02) and c.anneal(99) == 0.0
    values = [c.anneal(s) for s in range(100)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    c.cfg = dataclasses.replace(c.cfg, rho=1.0)
    x0 = torch.randn(16, math.prod(SHAPE))
    assert c.move(x0, 99).abs().max() == 0
    assert c.move(x0, 50).abs().max() > 0


# -- FLOPs ---------------------------------------------------------------------------------------

def analytic_dit_step_flops(net: DiT, batch: int) -> float:
    """Matmul FLOPs of a training step (forward + backward = 3 forwards, 2 FLOPs a
    multiply-add) of a DiT on a batch: per token and block the qkv, output, and MLP matrices
    plus the attention products; per item the adaLN modulations and the time MLP."""
    cfg = net.cfg
    d, tokens = cfg.width, net.grid ** 2
    hidden = int(d * cfg.mlp_ratio)
    patch = net.in_channels * cfg.patch_size**2
    per_token = cfg.depth * (4 * d * d + 2 * d * hidden + 2 * tokens * d) + 2 * patch * d
    per_item = cfg.depth * 6 * d * d + 2 * d * d + 256 * d + d * d
    return 3 * 2 * batch * (tokens * per_token + per_item)


@pytest.mark.parametrize("width", [32, 64, 96])
def test_flop_count_of_a_tiny_dit_step_matches_its_matmuls(width):
    net = tiny_generator(SHAPE, width, 1, dit=BIG, num_classes=CLASSES).net
    x, t = torch.randn(64, *SHAPE), torch.rand(64)

    def step():
        net(x, t, None).square().mean().backward()

    counted = counted_flops(step)
    expected = analytic_dit_step_flops(net, 64)
    assert counted == pytest.approx(expected, rel=0.10)


# -- standardisation -----------------------------------------------------------------------------

def test_element_standardisation_leaves_a_fixed_spatial_pattern_no_variance():
    """A latent whose channel variance is a pattern shared by every item (perfectly
    predictable) with the items' content a sliver of it: per channel the content is 1 % of the
    variance; per element it is all of it."""
    g = torch.Generator().manual_seed(0)
    pattern = 10 * torch.randn(1, *SHAPE, generator=g)
    z = pattern + 0.1 * torch.randn(256, *SHAPE, generator=g)
    for mode, share in (("channel", 1e-4), ("element", 1.0)):
        n, std = coupling(standardize=mode).standardize(z)
        content = n.var(0).mean() / n.transpose(0, 1).flatten(1).var(1).mean()
        assert float(content) == pytest.approx(share, rel=0.5 if mode == "channel" else 0.01)
        # the std maps n back to z's scale: z = mean + n * std
        torch.testing.assert_close(z - n * std, (z - n * std)[:1].expand_as(z), atol=1e-3,
                                   rtol=1e-3)


# -- which distortion matches the big generator ----------------------------------------------------

def test_a_big_generator_equal_to_the_tiny_one_matches_onestep_and_ode_exactly():
    """With the big generator the largest tiny one (in the same space) and rho = 1, the onestep
    and ode moves are its errors: norm ratio 1, cosine 1; Gaussian noise has the size, not the
    direction."""
    from latentlab.evaluation.distortion import compare_distortions

    c = coupling(rho=1.0)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(128, *SHAPE, generator=g)
    z = (z - z.mean(0)) / z.std(0)  # per element: the tiny's space is the big one's
    tiny = c.tiny[-1]
    with torch.no_grad():
        for p in tiny.parameters():
            p.normal_(0, 0.1)
    big = lambda x, t, cond: tiny(x.flatten(1), t, cond).view(x.shape)  # noqa: E731
    found = compare_distortions(c, big, c.process, z, torch.ones(SHAPE[0]))
    for name in ("onestep",):
        assert found[name]["norm_ratio"] == pytest.approx([1.0] * 5, abs=1e-4)
        assert found[name]["cosine"] == pytest.approx([1.0] * 5, abs=1e-4)
    assert found["ode"]["norm_ratio"] == pytest.approx(1.0, abs=1e-4)
    assert found["ode"]["cosine"] == pytest.approx(1.0, abs=1e-4)
    assert max(abs(v) for v in found["gaussian"]["cosine"]) < 0.05
    assert found["gaussian"]["norm_ratio"] == pytest.approx(found["onestep"]["norm_ratio"],
                                                            rel=0.1)
