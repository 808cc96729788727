"""The decomposer recipes: DAE stages, the coupled regularizer and distortion, resume."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from latentlab.data import load_dataset
from latentlab.errors import ConfigError
from latentlab.recipes.config import CoupledConfig, DAEConfig
from latentlab.recipes.coupled import LatentCoupling, distort
from latentlab.recipes.train import build_objective, train_tokenizer
from latentlab.tokenizers.bottlenecks.vq import VQConfig
from latentlab.training import checkpoint
from latentlab.training.checkpoint import step_name
from tests.conftest import tiny_run_config

COUPLED = CoupledConfig(widths=(8, 16, 32), depth=1, fit_every=10, start=0, ramp=5,
                        big_parameters=10**5)


def recipe_config(recipe: str, **train):
    cfg = tiny_run_config(**{"steps": 40, "checkpoint_every": 10, "keep_checkpoints": 10,
                             **train})
    return dataclasses.replace(cfg, recipe=recipe, coupled=COUPLED,
                               dae=DAEConfig(stage1_fraction=0.5, weak_width=0.5))


def weights(run, step: int) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / step_name(step) / checkpoint.WEIGHTS)


def test_distortion_is_rho_times_the_tiny_error():
    g = torch.Generator().manual_seed(0)
    z, z_tiny = torch.randn(6, 4, 3, 3, generator=g), torch.randn(6, 4, 3, 3, generator=g)
    rho = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0, 0.3])
    moved = distort(z, z_tiny, rho)
    for i, r in enumerate(rho):
        torch.testing.assert_close(moved[i] - z[i], r * (z_tiny[i] - z[i]), rtol=0, atol=1e-6)
    # the distortion is detached: z's gradient is the identity
    z.requires_grad_(True)
    distort(z, z_tiny, rho).sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))


def test_decoder_sees_distortion_on_its_share_only():
    """Rows past distort_fraction reach the decoder untouched; distorted rows move by at most
    the tiny error (rho <= 1) in the latent's own scale."""
    cfg = tiny_run_config()
    cfg = dataclasses.replace(cfg, recipe="coupled",
                              coupled=dataclasses.replace(COUPLED, distort_fraction=0.5))
    objective = build_objective(cfg, load_dataset("digits", "train"))
    coupling = objective.coupling
    coupling.tracker.fit[:, 0] = 1.0  # pretend a fit exists, with rho = 0.5 in every bin
    coupling.rho.fill_(0.5)
    x = load_dataset("digits", "train").__getitems__(list(range(8))).x
    out = objective.tokenizer.encode(x)
    torch.manual_seed(0)
    latent = coupling.couple(out, step=COUPLED.start + 1, frozen=False).latent
    assert torch.equal(latent[4:], out.latent[4:])
    assert not torch.equal(latent[:4], out.latent[:4])
    # the reconstruction of a distorted row still reaches the encoder (the move is detached)
    assert latent.requires_grad
    latent[:4].sum().backward()
    grads = [p.grad for p in objective.tokenizer.encoder.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_regularizer_gradient_reaches_the_encoder_unless_both_paths_are_detached():
    data = load_dataset("digits", "train")
    x = data.__getitems__(list(range(16))).x

    def encoder_grad(**overrides) -> float:
        cfg = dataclasses.replace(tiny_run_config(), recipe="coupled",
                                  coupled=dataclasses.replace(COUPLED, ramp=1, **overrides))
        torch.manual_seed(0)
        objective = build_objective(cfg, data)
        # as if trained: the zero-initialised output layer would pass no gradient to the input
        with torch.no_grad():
            for p in objective.coupling.tiny.parameters():
                p.normal_(0, 0.1)
        coupled = objective.coupling.couple(objective.tokenizer.encode(x), 5, frozen=False)
        coupled.loss.backward()
        grads = [p.grad for p in objective.tokenizer.encoder.parameters()]
        return sum(float(g.abs().sum()) for g in grads if g is not None)

    assert encoder_grad() > 0
    assert encoder_grad(stop_grad_input=True) > 0
    assert encoder_grad(stop_grad_target=True) > 0
    assert encoder_grad(stop_grad_input=True, stop_grad_target=True) == 0


@pytest.mark.slow
def test_short_coupled_run_keeps_the_latent_alive(tmp_path):
    cfg = recipe_config("coupled", steps=60)
    cfg = dataclasses.replace(cfg, coupled=dataclasses.replace(COUPLED, weight=1.0))
    metrics = train_tokenizer(cfg, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    var_min = [r["latent/var_min"] for r in records if "latent/var_min" in r]
    assert len(var_min) >= 5 and min(var_min) > 1e-2, var_min
    assert all(r["latent/dead_channels"] == 0 for r in records if "latent/dead_channels" in r)
    fits = [f for f in metrics["scaling_fits"] if f["ok"]]
    assert fits and all(0 < r <= 1 for r in metrics["rho"])
    # fitted on held-out scorings: 3 sizes at each of the kept scorings
    assert all(f["heldout"] and len(f["residuals"]) in (3, 6, 9, 12) for f in fits)
    assert all(v > 0 for v in metrics["predicted_big_loss"])
    assert len(metrics["tiny_parameters"]) == 3
    assert metrics["tiny_parameters"] == sorted(metrics["tiny_parameters"])


@pytest.mark.slow
def test_dae_stage_two_freezes_encoder_and_codebook_and_starts_a_new_decoder(tmp_path):
    cfg = recipe_config("dae")
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(
        cfg.model, latent_channels=4,
        bottleneck=VQConfig(codebook_size=16)))
    run = tmp_path / "run"
    metrics = train_tokenizer(cfg, run)
    switch = metrics["dae_switch_step"]
    assert switch == 20
    at_switch, end = weights(run, switch), weights(run, 40)
    frozen = [k for k in end if k.startswith(("ema.shadow.encoder.", "ema.shadow.bottleneck."))]
    assert any("codebook" in k or "embed" in k for k in frozen), frozen
    for key in frozen:  # the EMA at the switch becomes the frozen encoder, bit for bit
        assert torch.equal(at_switch[key], end[key]), key
        live = key.replace("ema.shadow.", "model.tokenizer.")
        assert torch.equal(end[live], end[key]), key
    # the full decoder is untouched in stage 1 (still its initial weights), trained in stage 2
    torch.manual_seed(cfg.train.seed)
    fresh = build_objective(cfg, load_dataset("digits", "train")).tokenizer.decoder.state_dict()
    for name, value in fresh.items():
        assert torch.equal(at_switch[f"model.tokenizer.decoder.{name}"], value), name
    assert any(not torch.equal(end[f"model.tokenizer.decoder.{n}"], v) for n, v in fresh.items())


def rewind(run, step: int) -> None:
    """Leave `run` as a run killed right after checkpoint `step` would."""
    for ckpt in (run / "checkpoints").glob("step_*"):
        if int(ckpt.name.split("_")[1]) > step:
            shutil.rmtree(ckpt)
    (run / "checkpoints" / checkpoint.LATEST).write_text(step_name(step) + "\n")


@pytest.mark.slow
@pytest.mark.parametrize("recipe, at", [("coupled", 20), ("dae", 10), ("dae", 30),
                                        ("coupled+dae", 10), ("coupled+dae", 30)])
def test_resume_mid_recipe_is_bit_identical(tmp_path, recipe, at):
    cfg = recipe_config(recipe)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    train_tokenizer(cfg, straight)
    shutil.copytree(straight, killed)
    rewind(killed, at)
    train_tokenizer(cfg, killed, "resume")
    a, b = weights(straight, 40), weights(killed, 40)
    assert a.keys() == b.keys()
    for key in a:  # bit-identical, NaN where no held-out scoring has been kept yet
        assert torch.equal(a[key].nan_to_num(7.0), b[key].nan_to_num(7.0)), key


def test_coupled_needs_the_big_generator_size():
    cfg = dataclasses.replace(tiny_run_config(), recipe="coupled",
                              coupled=dataclasses.replace(COUPLED, big_parameters=0))
    with pytest.raises(ConfigError, match="coupled.big_parameters"):
        build_objective(cfg, load_dataset("digits", "train"))


def test_coupled_big_generator_size_from_its_config(tmp_path):
    config = tmp_path / "big.yaml"
    config.write_text("generator:\n  family: flow\n  network: dit\n  transformer:\n"
                      "    width: 64\n    depth: 2\n    heads: 2\n    patch_size: 2\n")
    cfg = dataclasses.replace(tiny_run_config(), recipe="coupled", coupled=dataclasses.replace(
        COUPLED, big_parameters=0, big_generator=str(config)))
    coupling = build_objective(cfg, load_dataset("digits", "train")).coupling
    assert isinstance(coupling, LatentCoupling)
    assert 50_000 < coupling.n_big < 500_000


def vq_coupled_objective(**coupled):
    cfg = tiny_run_config()
    cfg = dataclasses.replace(cfg, recipe="coupled", coupled=dataclasses.replace(
        COUPLED, ramp=1, **coupled), model=dataclasses.replace(
        cfg.model, latent_channels=4,
        bottleneck=VQConfig(codebook_size=16)))
    torch.manual_seed(0)
    objective = build_objective(cfg, load_dataset("digits", "train"))
    with torch.no_grad():  # as if trained (zero-initialised layers pass no gradient)
        for p in objective.coupling.tiny.parameters():
            p.normal_(0, 0.1)
    return objective


def test_token_regularizer_reaches_the_encoder_through_the_latent():
    objective = vq_coupled_objective()
    x = load_dataset("digits", "train").__getitems__(list(range(16))).x
    coupled = objective.coupling.couple(objective.tokenizer.encode(x), 5, frozen=False)
    assert coupled.loss > 0
    coupled.loss.backward()
    grads = [p.grad for p in objective.tokenizer.encoder.parameters()]
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0


def test_token_distortion_replaces_tokens_by_the_prior_prediction():
    objective = vq_coupled_objective()
    coupling, bottleneck = objective.coupling, objective.tokenizer.bottleneck
    x = load_dataset("digits", "train").__getitems__(list(range(16))).x
    out = objective.tokenizer.encode(x)
    tokens = out.indices.flatten(1)
    coupling.replace.fill_(1.0)
    predicted = coupling.tiny[-1](tokens).argmax(-1).reshape(out.indices.shape)
    torch.testing.assert_close(coupling._replaced(out, tokens),
                               bottleneck.indices_to_codes(predicted), rtol=0, atol=0)
    coupling.replace.fill_(0.0)
    kept = coupling._replaced(out, tokens)
    assert torch.equal(kept, out.latent)
    kept.sum().backward()  # kept tokens pass the straight-through gradient to the encoder
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in objective.tokenizer.encoder.parameters())
