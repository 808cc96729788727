"""Vector quantisation: it trains, k-means and restarts earn their keep, codes map exactly."""

from __future__ import annotations

import dataclasses
from functools import cache

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from latentlab.tokenizers.bottlenecks import VectorQuantizer, VQConfig

LATENT = 4  # channels of the tiny model's (B, 4, 2, 2) latent


@cache
def digits() -> torch.Tensor:
    """(1797, 1, 8, 8) handwritten digits in [-1, 1]."""
    images = torch.tensor(load_digits().images, dtype=torch.float32)
    return images[:, None] / 8 - 1


class TinyVQAutoencoder(nn.Module):
    """8x8 digit -> (4, 2, 2) latent -> vector quantiser -> 8x8 digit."""

    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, 32, 3, 2, 1), nn.ReLU(),
                                     nn.Conv2d(32, LATENT, 3, 2, 1))
        self.vq = VectorQuantizer(LATENT, cfg)
        self.decoder = nn.Sequential(nn.ConvTranspose2d(LATENT, 32, 4, 2, 1), nn.ReLU(),
                                     nn.ConvTranspose2d(32, 1, 4, 2, 1))

    def forward(self, x):
        out = self.vq(self.encoder(x))
        return self.decoder(out.latent), out


def train(cfg: VQConfig, steps: int, seed: int = 0) -> tuple[TinyVQAutoencoder, list[float]]:
    """Adam on random digit batches; returns the model and its training reconstruction MSEs."""
    torch.manual_seed(seed)
    model = TinyVQAutoencoder(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x_all, g = digits(), torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        x = x_all[torch.randint(len(x_all), (128,), generator=g)]
        x_hat, out = model(x)
        rec = (x_hat - x).square().mean()
        opt.zero_grad()
        (rec + out.loss).backward()
        opt.step()
        losses.append(rec.item())
    return model.eval(), losses


@torch.no_grad()
def held_out(model: TinyVQAutoencoder) -> tuple[float, float]:
    """(reconstruction MSE, fraction of codes used) over the last 500 digits, in eval."""
    x = digits()[-500:]
    x_hat, out = model(x)
    used = out.indices.unique().numel() / model.vq.codebook_size
    return (x_hat - x).square().mean().item(), used


@pytest.mark.parametrize("update", ["ema", "loss"])
def test_trains_on_digits(update):
    cfg = VQConfig(codebook_size=32, update=update)
    model, losses = train(cfg, steps=200)
    mse, _ = held_out(model)
    mean_image_mse = (digits()[-500:] - digits()[:-500].mean(0)).square().mean().item()
    assert mse < 0.5 * losses[0], (mse, losses[0])
    # better than the best constant output by far: the codes carry the digit (measured ~0.45)
    assert mse < 0.65 * mean_image_mse, (mse, mean_image_mse)
    assert isinstance(model.vq.codebook, nn.Parameter) == (update == "loss")


def test_dead_code_restart_raises_usage():
    # a tiny uniform init leaves most codes far from the data: without restarts they stay dead
    # (measured over seeds 0-3: ~0.9 of the codes used with restarts, 0.25-0.53 without)
    base = VQConfig(codebook_size=32, kmeans_init=False)
    on, _ = train(dataclasses.replace(base, restart_dead=True), steps=100)
    off, _ = train(dataclasses.replace(base, restart_dead=False), steps=100)
    (_, usage_on), (_, usage_off) = held_out(on), held_out(off)
    assert usage_on > usage_off + 0.25, (usage_on, usage_off)


def first_step_error(cfg: VQConfig, x: torch.Tensor) -> float:
    torch.manual_seed(0)
    vq = VectorQuantizer(x.shape[1], cfg).train()
    return vq(x).stats["commit"].item()


def test_kmeans_init_quantises_better_than_random_init():
    x = digits()[:512].flatten(1)  # (512, 64): each digit one token
    cfg = VQConfig(codebook_size=32, restart_dead=False)
    kmeans = first_step_error(cfg, x)
    seeding_only = first_step_error(dataclasses.replace(cfg, kmeans_iters=0), x)
    random = first_step_error(dataclasses.replace(cfg, kmeans_init=False), x)
    assert kmeans < 0.5 * random, (kmeans, random)
    assert kmeans < seeding_only  # Lloyd iterations improve on k-means++ seeding


def test_kmeans_init_happens_once_and_is_saved():
    x = digits()[:256].flatten(1)
    torch.manual_seed(0)
    vq = VectorQuantizer(64, VQConfig(codebook_size=16, update="loss")).train()
    vq(x)
    assert vq.initialized
    after_init = vq.codebook.detach().clone()
    vq(x + 5)  # a second batch must not re-run k-means (the loss update does not move codes)
    assert torch.equal(vq.codebook.detach(), after_init)
    assert vq.state_dict()["initialized"]


@pytest.mark.parametrize("update", ["ema", "loss"])
def test_cosine_codes_are_unit_norm(update):
    torch.manual_seed(0)
    vq = VectorQuantizer(LATENT, VQConfig(codebook_size=16, cosine=True, update=update))
    z = 3 * torch.randn(8, LATENT, 3, 3)
    vq.train()(z)
    out = vq.eval()(z)
    ones = torch.ones(8, 3, 3)
    torch.testing.assert_close(out.latent.norm(dim=1), ones)
    torch.testing.assert_close(vq.indices_to_codes(out.indices).norm(dim=1), ones)
    # nearest in angle: the scale of the input does not matter
    assert torch.equal(vq(0.1 * z).indices, out.indices)


def test_every_index_maps_to_its_code_and_back():
    torch.manual_seed(0)
    vq = VectorQuantizer(LATENT, VQConfig(codebook_size=64)).eval()
    indices = torch.arange(64).reshape(4, 4, 4)  # (B, h, w)
    codes = vq.indices_to_codes(indices)
    assert codes.shape == (4, LATENT, 4, 4)
    assert torch.equal(vq.codes_to_indices(codes), indices)


def test_ema_codebook_follows_the_data():
    # a single cluster of tokens: the code that takes them moves to their mean (EMA update)
    torch.manual_seed(0)
    vq = VectorQuantizer(2, VQConfig(codebook_size=4, kmeans_init=False, restart_dead=False,
                                     decay=0.5)).train()
    x = torch.tensor([[2.0, -1.0]]) + 0.01 * torch.randn(64, 2)
    for _ in range(20):
        out = vq(x)
    code = vq.codebook[out.indices[0]]
    torch.testing.assert_close(code, x.mean(0), rtol=0, atol=1e-3)


def test_dead_codes_are_counted_and_replaced_by_batch_tokens():
    torch.manual_seed(0)
    vq = VectorQuantizer(2, VQConfig(codebook_size=8, kmeans_init=False)).train()
    x = torch.randn(100, 2) + 10  # far from every initial code: one code takes all
    out = vq(x)
    assert out.stats["dead_codes"] == 7
    is_token = (vq.codebook[:, None] == x).all(-1).any(-1)  # (K,) a code equal to a token of x
    assert is_token.sum() == 7 and not is_token[out.indices[0]]  # the one used code moved by EMA
    assert vq.cluster_size[is_token].eq(1.0).all()  # restarted at the threshold
