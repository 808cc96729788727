"""The training loop: schedule, sampler, EMA, accumulation, divergence."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from latentlab.data.base import ArrayDataset
from latentlab.errors import TrainingDiverged
from latentlab.training import RunDir, TrainConfig, checkpoint, train
from latentlab.training.ema import EMA
from latentlab.training.objective import Objective, PhaseOutput
from latentlab.training.rundir import read_metrics
from latentlab.training.sampler import StepSampler
from latentlab.training.schedule import lr_factor


class Regression(Objective):
    """Least squares y = Wx on vector data: tiny, exact, and with a known gradient."""

    def __init__(self, nan_at: int | None = None):
        super().__init__()
        self.net = nn.Linear(4, 1)
        self.nan_at = nan_at

    def forward(self, phase, batch, step, handed):
        target = batch.x.sum(1, keepdim=True)
        loss = (self.net(batch.x) - target).pow(2).mean()
        if step == self.nan_at:
            loss = loss * float("nan")
        return PhaseOutput(loss, {"loss/mse": loss.detach()})

    def ema_model(self):
        return self.net


def vectors(n=64):
    g = torch.Generator().manual_seed(0)
    return ArrayDataset(torch.randn(n, 4, generator=g), None, [], "vectors")


def cfg(**kw):
    base = dict(steps=8, batch_size=16, warmup=0, log_every=2, eval_every=0, checkpoint_every=2,
                precision="fp32", lr=1e-2, ema=0.0, grad_clip=0.0)
    return TrainConfig(**{**base, **kw})


def test_schedule_warms_up_then_decays_to_floor():
    f = [lr_factor(s, 100, 10, "cosine", 0.1) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)  # linear warmup
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))  # then non-increasing
    assert f[-1] == pytest.approx(0.1)  # reaches the floor at the last step
    assert lr_factor(50, 100, 10, "constant", 0.1) == 1.0


def test_sampler_splits_global_batches_across_ranks_and_covers_epochs():
    single = StepSampler(10, 4, 1, rank=0, world=1, seed=3)
    ranks = [StepSampler(10, 4, 2, rank=r, world=2, seed=3) for r in range(2)]
    for step in range(7):
        split = sorted(i for m in range(2) for s in ranks for i in s.micro_batch(step, m))
        assert split == sorted(single.micro_batch(step, 0))  # same global batch
    stream = [i for step in range(5) for i in single.micro_batch(step, 0)]  # 20 = 2 epochs
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:]) == list(range(10))
    assert stream[:10] != stream[10:]  # each epoch reshuffled


def test_ema_follows_its_formula():
    live = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(live.weight)
    ema = EMA(live, decay=0.5)
    expected = 0.0
    for n in range(1, 6):
        live.weight.data.fill_(float(n))
        ema.update(live)
        d = min(0.5, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * n
        assert ema.shadow.weight.item() == pytest.approx(expected)
    with ema.swapped_into(live):
        assert live.weight.item() == pytest.approx(expected)
    assert live.weight.item() == 5.0  # restored


def _final_weights(tmp_path, name, **kw):
    torch.manual_seed(0)
    objective = Regression()
    train(objective, vectors(), cfg(**kw), RunDir(tmp_path / name), "x: 1")
    return objective.net.weight.detach().clone()


def test_accumulation_matches_one_big_batch(tmp_path):
    one = _final_weights(tmp_path, "a", accumulate=1, steps=3)
    four = _final_weights(tmp_path, "b", accumulate=4, steps=3)
    torch.testing.assert_close(one, four, rtol=1e-5, atol=1e-6)


def test_training_is_seeded(tmp_path):
    a = _final_weights(tmp_path, "a", seed=1)
    assert torch.equal(a, _final_weights(tmp_path, "b", seed=1))
    assert not torch.equal(a, _final_weights(tmp_path, "c", seed=2))


def test_loss_falls(tmp_path):
    torch.manual_seed(0)
    objective = Regression()
    run = RunDir(tmp_path / "r")
    settings = cfg(steps=60, log_every=10, lr=0.05, schedule="constant")
    train(objective, vectors(), settings, run, "x: 1")
    losses = [r["loss/mse"] for r in read_metrics(run.path) if "loss/mse" in r]
    assert losses[-1] < 0.05 * losses[0]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    torch.manual_seed(0)
    run = RunDir(tmp_path / "r")
    with pytest.raises(TrainingDiverged, match="not finite at step 5; last good checkpoint: "
                                               ".*step_00000004"):
        train(Regression(nan_at=5), vectors(), cfg(), run, "x: 1")
    ckpt = checkpoint.load_latest(run.checkpoints)
    assert ckpt.step == 4
    assert all(math.isfinite(v) for v in ckpt.tensors["model.net.weight"].flatten().tolist())


class TwoPhase(Objective):
    """Phase 'a' fits `a` to 3 through `b` (like a generator through its discriminator);
    phase 'b' fits `b` to -2. Each phase's optimizer must move only its own parameter."""

    phases = ("a", "b")

    def __init__(self, couple: bool):
        super().__init__()
        self.a, self.b = nn.Parameter(torch.zeros(())), nn.Parameter(torch.zeros(()))
        self.couple = couple

    def phase_parameters(self, phase):
        return [self.a] if phase == "a" else [self.b]

    def forward(self, phase, batch, step, handed):
        if phase == "a":
            loss = (self.a - 3).pow(2) + (self.b.pow(2) * self.a if self.couple else 0)
        else:
            loss = (self.b + 2).pow(2)
        return PhaseOutput(loss, {f"loss/{phase}": loss.detach()})


def test_each_phase_steps_only_its_own_parameters(tmp_path):
    """Phase a's gradient reaches b, yet b ends exactly where phase b alone takes it."""
    coupled, alone = TwoPhase(couple=True), TwoPhase(couple=False)
    for name, objective in (("c", coupled), ("s", alone)):
        train(objective, vectors(), cfg(steps=40, lr=0.1), RunDir(tmp_path / name), "x: 1")
    assert torch.equal(coupled.b, alone.b)
    assert alone.b.item() == pytest.approx(-2, abs=0.3)
    assert coupled.a.item() != alone.a.item()  # b really did enter phase a's loss


class HandsOn(Objective):
    """Phase 'a' hands on the sum of its micro-batch; every call is recorded."""

    phases = ("a", "b")

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.calls: list[tuple[str, dict, float]] = []

    def forward(self, phase, batch, step, handed):
        total = float(batch.x.sum())
        self.calls.append((phase, dict(handed), total))
        return PhaseOutput((self.w - 1).pow(2), {}, total if phase == "a" else None)


def test_a_phase_gets_what_earlier_phases_handed_on_for_its_own_micro_batch(tmp_path):
    objective = HandsOn()
    train(objective, vectors(), cfg(steps=3, accumulate=2), RunDir(tmp_path), "x: 1")
    a = [c for c in objective.calls if c[0] == "a"]
    b = [c for c in objective.calls if c[0] == "b"]
    assert len(a) == len(b) == 3 * 2
    assert all(handed == {} for _, handed, _ in a)  # nothing is carried over from a step before
    assert len({total for _, _, total in b}) == 6  # six different micro-batches
    for _, handed, total in b:
        assert handed == {"a": total}


def test_auto_precision_takes_bf16_only_where_the_cpu_computes_it_natively(monkeypatch):
    from latentlab.training.engine import resolve_precision

    cpu = torch.device("cpu")
    for avx512_bf16, amx, expected in ((False, False, "fp32"), (True, False, "bf16"),
                                       (False, True, "bf16")):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert resolve_precision("auto", cpu) == expected
        assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == (
            "bf16")
