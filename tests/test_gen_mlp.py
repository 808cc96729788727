"""The MLP denoiser, the timestep embedding, and short real training runs on a 2-D mixture."""

from __future__ import annotations

import math

import pytest
import torch

from latentlab.generators import DDPM, FlowMatching
from latentlab.generators.denoisers.mlp import MLPDenoiser, MLPDenoiserConfig
from latentlab.generators.guidance import drop_labels
from latentlab.nn.embeddings import timestep_embedding

K = 8
CENTRES = torch.stack([torch.cos(2 * math.pi * torch.arange(K) / K),
                       torch.sin(2 * math.pi * torch.arange(K) / K)], dim=1)  # (K, 2)


def mixture(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 2) points of the 8-cluster mixture (unit circle, std 0.05) and their (n,) labels."""
    labels = torch.randint(0, K, (n,), generator=generator)
    return CENTRES[labels] + 0.05 * torch.randn(n, 2, generator=generator), labels


def test_timestep_embedding():
    t = torch.tensor([0.0, 0.5, 1.0])
    emb = timestep_embedding(t, 8)
    assert emb.shape == (3, 8) and emb.dtype == torch.float32
    torch.testing.assert_close(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))  # cos 0, sin 0
    # the first frequency is 1 per unit of scaled time (t * 1000)
    assert emb[1, 0].item() == pytest.approx(math.cos(500.0), abs=1e-4)
    assert timestep_embedding(t, 7).shape == (3, 7)
    assert not torch.allclose(timestep_embedding(torch.tensor([0.1]), 64),
                              timestep_embedding(torch.tensor([0.101]), 64))


def test_mlp_denoiser_shapes_init_and_classes():
    cfg = MLPDenoiserConfig(width=32, depth=2, time_embed=16)
    model = MLPDenoiser(2, cfg, K)
    x, t = torch.randn(5, 2), torch.rand(5)
    out = model(x, t, torch.arange(5))
    assert out.shape == (5, 2) and (out == 0).all()  # zero-initialised output layer
    assert model.null_class == K and model.classes.num_embeddings == K + 1
    torch.nn.init.normal_(model.out[-1].weight)
    null = torch.full((5,), K)
    torch.testing.assert_close(model(x, t, None), model(x, t, null))  # None is the null class
    assert not torch.allclose(model(x, t, torch.zeros(5, dtype=torch.long)), model(x, t, null))
    assert MLPDenoiser(2, MLPDenoiserConfig(width=8)).null_class is None
    with pytest.raises(ValueError, match="unconditional"):
        MLPDenoiser(2, MLPDenoiserConfig(width=8))(x, t, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError):
        MLPDenoiserConfig(width=0)


def train(process, steps: int, cond: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    cfg = MLPDenoiserConfig(width=128, depth=3, time_embed=32)
    model = MLPDenoiser(2, cfg, K if cond else 0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    # linear decay to 0: the last steps average out the minibatch noise, which sharpens modes
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 - i / steps)
    losses = []
    for _ in range(steps):
        x0, labels = mixture(256, g)
        labels = drop_labels(labels, 0.1, K, g) if cond else None
        out = process.loss(model, x0, labels, generator=g)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        sched.step()
        losses.append(out.loss.item())
    return model.eval(), losses


def check_samples(x: torch.Tensor) -> None:
    dist = torch.cdist(x, CENTRES)  # (n, K)
    nearest = dist.argmin(1)
    near = (dist.min(1).values < 0.25).float().mean().item()
    share = torch.bincount(nearest, minlength=K).float() / len(x)
    # N(0, I) puts ~15% of its mass within 0.25 of a centre; 400-600 toy steps do not yet make
    # clusters as tight as std 0.05, so ask for a clear majority rather than nearly all
    assert near > 0.5, f"only {near:.0%} of samples within 0.25 of a centre"
    assert (share >= 0.05).all(), f"mode shares {share.tolist()}"


@pytest.mark.slow
@pytest.mark.parametrize("process,sampler,steps", [
    (FlowMatching(), "heun", 20),
    (DDPM("linear"), "ddim", 50),
], ids=["flow", "ddpm"])
def test_training_covers_all_modes(process, sampler, steps):
    model, losses = train(process, 600, cond=False)
    # the flow loss has a high floor (Var(eps - x_0 | x_t) near t = 1), hence a modest factor
    assert sum(losses[-50:]) / 50 < 0.75 * sum(losses[:10]) / 10
    x = process.sample(model, (2000, 2), steps=steps, sampler=sampler,
                       generator=torch.Generator().manual_seed(1))
    check_samples(x)
