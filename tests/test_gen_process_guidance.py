"""Classifier-free guidance and label dropout."""

from __future__ import annotations

import pytest
import torch

from latentlab.generators import FlowMatching
from latentlab.generators.denoisers.mlp import MLPDenoiser, MLPDenoiserConfig
from latentlab.generators.guidance import drop_labels, guided

NULL = 3


def toy_denoiser(x, t, cond):
    # a class-dependent prediction whose null class is distinguishable
    assert cond is not None
    return x * t[:, None] + cond[:, None].float()


def test_scale_zero_is_unconditional_and_one_is_conditional():
    x, t, cond = torch.randn(5, 2), torch.rand(5), torch.tensor([0, 1, 2, 0, 1])
    null = torch.full_like(cond, NULL)
    at = lambda scale: guided(toy_denoiser, scale, NULL)(x, t, cond)  # noqa: E731
    torch.testing.assert_close(at(0.0), toy_denoiser(x, t, null))
    torch.testing.assert_close(at(1.0), toy_denoiser(x, t, cond))
    # scale 3 extrapolates: uncond + 3 (cond - uncond)
    expected = toy_denoiser(x, t, null) + 3 * (toy_denoiser(x, t, cond) - toy_denoiser(x, t, null))
    torch.testing.assert_close(at(3.0), expected)


def test_guided_calls_the_network_once_with_a_doubled_batch():
    calls = []

    def denoiser(x, t, cond):
        calls.append(x.shape[0])
        return x

    guided(denoiser, 2.0, NULL)(torch.randn(4, 2), torch.rand(4), torch.zeros(4, dtype=torch.long))
    assert calls == [8]


def test_guidance_without_labels_raises():
    with pytest.raises(ValueError, match="cond=None"):
        guided(toy_denoiser, 2.0, NULL)(torch.randn(2, 2), torch.rand(2), None)
    with pytest.raises(ValueError, match="cond=None"):
        FlowMatching().sample(toy_denoiser, (2, 2), steps=2, guidance=2.0, null_class=NULL)


def test_sample_with_guidance_reads_the_null_class_from_the_model():
    model = MLPDenoiser(2, MLPDenoiserConfig(width=16, depth=1, time_embed=8), 3)
    for p in model.out.parameters():
        torch.nn.init.normal_(p)  # undo the zero init so the classes differ
    noise, cond = torch.randn(4, 2), torch.tensor([0, 1, 2, 0])
    flow = FlowMatching()
    at_one = flow.sample(model, (4, 2), cond, steps=3, noise=noise, guidance=1.0)
    plain = flow.sample(model, (4, 2), cond, steps=3, noise=noise)
    torch.testing.assert_close(at_one, plain, atol=1e-5, rtol=1e-5)
    at_zero = flow.sample(model, (4, 2), cond, steps=3, noise=noise, guidance=0.0)
    torch.testing.assert_close(at_zero, flow.sample(model, (4, 2), None, steps=3, noise=noise),
                               atol=1e-5, rtol=1e-5)


def test_drop_labels():
    cond = torch.zeros(100_000, dtype=torch.long)
    dropped = drop_labels(cond, 0.1, NULL, torch.Generator().manual_seed(0))
    assert set(dropped.unique().tolist()) == {0, NULL}
    assert (dropped == NULL).float().mean().item() == pytest.approx(0.1, abs=0.005)
    assert torch.equal(drop_labels(cond, 0.0, NULL), cond)
    assert (drop_labels(cond, 1.0, NULL) == NULL).all()
    with pytest.raises(ValueError):
        drop_labels(cond, 1.5, NULL)
