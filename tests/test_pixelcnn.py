"""Gated PixelCNN prior: a causal receptive field without blind spot, exact normalised
likelihoods, conditioning and guidance, pixel quantisation, and a short training run on the
pixels of digits that covers every class, saves, loads and scores its bits/dim."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from latentlab.data import load_dataset
from latentlab.data.config import DataConfig
from latentlab.evaluation.generator import ar_rate
from latentlab.generation.config import GeneratorConfig, GeneratorRunConfig
from latentlab.generation.generator import Generator
from latentlab.generation.sample import sample_to_file
from latentlab.generation.train import train_generator
from latentlab.generators.pixelcnn import (
    PixelCNN,
    PixelCNNConfig,
    pixels_to_tokens,
    tokens_to_pixels,
)
from latentlab.nn.text import TextEncoder
from latentlab.training.config import TrainConfig

V, GRID = 5, (4, 5)


def tiny(num_classes: int = 3, grid=GRID, vocab: int = V, layers: int = 3) -> PixelCNN:
    """A tiny PixelCNN with every weight random (the conditioning bias, zero at init, too)."""
    torch.manual_seed(0)
    model = PixelCNN(PixelCNNConfig(channels=8, layers=layers), vocab, grid, num_classes)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=0.3)
    return model.eval()


def tokens(b: int, seed: int = 1) -> torch.Tensor:
    n = GRID[0] * GRID[1]
    return torch.randint(0, V, (b, n), generator=torch.Generator().manual_seed(seed))


def test_config_validation():
    with pytest.raises(ValueError, match="kernel_size"):
        PixelCNNConfig(kernel_size=4)
    with pytest.raises(ValueError, match="kernel_size"):
        PixelCNNConfig(kernel_size=1)  # a (1, 1) vertical kernel leaves a blind spot
    with pytest.raises(ValueError, match="levels"):
        PixelCNNConfig(levels=1)
    with pytest.raises(ValueError, match="text, num_classes"):
        PixelCNN(PixelCNNConfig(), V, GRID, 2, text=text_encoder())


def test_receptive_field_is_causal_and_has_no_blind_spot():
    """d logits[p] / d input[q] is exactly zero for q >= p (raster order) and nonzero for every
    q < p: up-left and up-right of p included, which the plain masked PixelCNN misses. (Four
    layers of kernel 3 reach four tokens left in a row: the whole 4x5 grid.)"""
    model, x = tiny(layers=4), tokens(1)
    seen = {}
    handle = model.token_embed.register_forward_hook(
        lambda module, args, out: seen.setdefault("embed", out))
    logits = model(x)  # (1, N, V)
    handle.remove()
    embed = seen["embed"]  # (1, H, W, D)
    n = x.shape[1]
    for p in range(n):
        (grad,) = torch.autograd.grad(logits[0, p].sum(), embed, retain_graph=True)
        reached = grad[0].abs().sum(-1).flatten() > 0  # (N,)
        assert reached.tolist() == [q < p for q in range(n)], (p, reached)


def test_likelihood_sums_to_one_over_every_grid():
    """2x2 grid, 3 values: the 81 grids' probabilities sum to 1, for each condition."""
    model = tiny(num_classes=2, grid=(2, 2), vocab=3)
    grids = torch.tensor(list(itertools.product(range(3), repeat=4)))  # (81, 4)
    for label in (0, 1, 2):  # 2 = the null class
        logp = model.log_prob(grids, torch.full((81,), label)).double().sum(1)
        torch.testing.assert_close(logp.exp().sum(), torch.tensor(1.0, dtype=torch.double))


def test_next_token_logits_and_guidance():
    model, x = tiny(), tokens(3)
    cond = torch.tensor([0, 1, 3])  # 3 = null class
    full = model(x, cond)  # (B, N, V)
    for i in (0, 7, x.shape[1] - 1):
        step, cache = model.next_token_logits(x[:, :i], cond)
        assert cache is None
        torch.testing.assert_close(step, full[:, i])
        g0, _ = model.next_token_logits(x[:, :i], cond, guidance=0.0)
        torch.testing.assert_close(g0, model.next_token_logits(x[:, :i], None)[0])
        g1, _ = model.next_token_logits(x[:, :i], cond, guidance=1.0)
        torch.testing.assert_close(g1, step)
    with pytest.raises(ValueError, match="prefix"):
        model.next_token_logits(x, cond)
    with pytest.raises(ValueError, match="guidance"):
        model.sample(2, None, guidance=2.0)


def test_class_conditioning_changes_every_position():
    model, x = tiny(), tokens(2)
    a, b = model(x, torch.tensor([0, 0])), model(x, torch.tensor([1, 1]))
    assert (a - b).abs().amax(-1).min() > 1e-4  # even the first token's distribution
    with pytest.raises(ValueError, match="cond"):
        tiny(num_classes=0)(x, torch.zeros(2, dtype=torch.long))


def text_encoder() -> TextEncoder:
    torch.manual_seed(0)
    null = torch.tensor([1, 0, 0, 0])  # the begin token, then padding
    return TextEncoder(vocab_size=10, max_len=4, null_ids=null, width=16, depth=1, heads=2)


def test_text_conditioning_by_the_pooled_prompt():
    torch.manual_seed(0)
    model = PixelCNN(PixelCNNConfig(channels=8, layers=2), V, GRID, text=text_encoder()).eval()
    with torch.no_grad():
        model.cond_bias.weight.normal_(std=0.3)
    x = tokens(2)
    prompts = torch.tensor([[1, 5, 6, 0], [1, 7, 0, 0]])
    out = model(x, prompts)
    assert not torch.allclose(out[0], model(x[1:], prompts[1:])[0])  # prompt matters
    torch.testing.assert_close(model(x, None), model(x, model.null_class.expand(2, -1)))
    a = model.sample(2, prompts, guidance=3.0, generator=torch.Generator().manual_seed(0))
    assert a.shape == (2, 20) and int(a.max()) < V


def test_sampling_is_deterministic_and_greedy_at_temperature_zero():
    model, cond = tiny(), torch.tensor([0, 1, 2])
    greedy = model.sample(3, cond, temperature=0.0)
    torch.testing.assert_close(model(greedy, cond).argmax(-1), greedy)
    a = model.sample(3, cond, guidance=2.0, generator=torch.Generator().manual_seed(4))
    b = model.sample(3, cond, guidance=2.0, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b)


def test_pixels_round_trip_through_joint_tokens():
    levels = 4
    q = torch.randint(0, levels, (2, 3, 5, 6), generator=torch.Generator().manual_seed(0))
    x = q.float() * (2 / (levels - 1)) - 1  # (B, C, H, W) on the levels, in [-1, 1]
    t = pixels_to_tokens(x, levels)
    assert t.shape == (2, 5, 6) and int(t.max()) < levels ** 3
    # channel 0 is the most significant digit of the joint token
    torch.testing.assert_close(t, q[:, 0] * 16 + q[:, 1] * 4 + q[:, 2])
    torch.testing.assert_close(tokens_to_pixels(t, levels, 3), x)
    noisy = (x + 0.1 * (torch.rand_like(x) - 0.5)).clamp(-1, 1)
    torch.testing.assert_close(pixels_to_tokens(noisy, levels), t)  # rounds to the nearest


def digits_pixel_run(steps: int) -> GeneratorRunConfig:
    return GeneratorRunConfig(
        data=DataConfig(spec="digits"),
        generator=GeneratorConfig(family="pixelcnn", label_dropout=0.1, network=PixelCNNConfig(
            channels=24, layers=4, levels=17)),
        train=TrainConfig(steps=steps, batch_size=64, lr=3e-3, warmup=20, ema=0.0,
                          log_every=100, eval_every=0, checkpoint_every=1000,
                          precision="fp32"))


@pytest.mark.slow
def test_pixels_of_digits_train_cover_every_class_and_round_trip(tmp_path):
    """A short class-conditional run on digits' 17 grey levels: the samples drawn for each
    label (guidance 2) are nearest its class's mean image most of the time; save and load keep the
    samples; the rate of evaluate is the held-out likelihood."""
    run = tmp_path / "run"
    metrics = train_generator(digits_pixel_run(250), run)
    assert metrics["modelled"]["kind"] == "pixels" and metrics["modelled"]["vocab_size"] == 17
    sample_to_file(run, 200, tmp_path / "s.npz", seed=0, guidance=2.0)
    train = load_dataset("digits", "train")
    batch = train.__getitems__(list(range(len(train))))
    means = torch.stack([batch.x[batch.y == k].mean(0) for k in range(10)]).flatten(1)
    with np.load(tmp_path / "s.npz") as f:
        images = torch.from_numpy(f["images"]).float() / 127.5 - 1  # (N, 8, 8, 1)
        labels = torch.from_numpy(f["labels"])
    nearest = torch.cdist(images.flatten(1), means).argmin(1)
    shares = torch.bincount(nearest, minlength=10) / len(nearest)
    right = float((nearest == labels).float().mean())
    # (250 steps: 0.72 right, each class 0.045 or more; 0.55 without guidance)
    assert shares.min() > 0.02 and right > 0.5, (shares, right)
    # save / load: the same network, the same samples for the same seed
    loaded = Generator.load(run)
    copy = Generator.load(loaded.save(tmp_path / "copy"))
    x = pixels_to_tokens(batch.x[:8], 17).flatten(1)
    torch.testing.assert_close(copy.network(x, batch.y[:8]), loaded.network(x, batch.y[:8]))
    g = [torch.Generator().manual_seed(3) for _ in range(2)]
    torch.testing.assert_close(copy.sample(4, torch.arange(4), generator=g[0]),
                               loaded.sample(4, torch.arange(4), generator=g[1]))
    rate = ar_rate(loaded, "digits")  # one token per pixel of one channel: bits/dim per token
    assert rate["bits_per_dim"] == pytest.approx(rate["bits_per_token"])
    bits = metrics["test"]["nll"] / math.log(2)
    assert rate["bits_per_dim_given_label"] == pytest.approx(bits, rel=1e-4)
    assert rate["bits_per_dim_given_label"] < rate["bits_per_dim"] < math.log2(17)


def test_codec_codes_with_a_pixelcnn_prior_at_its_exact_likelihood():
    """A PixelCNN prior in the codec: tokens round-trip, and the payload is -log2 P of them."""
    from latentlab.codec import CodecModel, compress, decompress
    from latentlab.generation.models import Modelled, build_models

    from .test_codec import GRID as CODEC_GRID
    from .test_codec import VOCAB, digits, tiny_parts

    tokenizer, _ = tiny_parts()
    torch.manual_seed(0)
    prior = build_models(GeneratorConfig(family="pixelcnn", network=PixelCNNConfig(
        channels=8, layers=2)), Modelled(CODEC_GRID, "indices", 0, VOCAB))["model"]
    torch.nn.init.normal_(prior.head[-1].weight, std=0.5)  # peaked, varied distributions
    model = CodecModel(tokenizer, prior, CODEC_GRID)
    encoded = compress(model, digits(16), chunk=6)
    assert torch.equal(decompress(model, encoded.data).tokens, encoded.tokens)
    with torch.no_grad():
        tokens = encoded.tokens.reshape(len(encoded.tokens), -1)
        nll_bits = -float(model.prior.log_prob(tokens).double().sum()) / math.log(2)
    assert abs(encoded.bits - nll_bits) <= 0.001 * nll_bits, (encoded.bits, nll_bits)


def test_text_conditioned_pixels_of_colour_shapes_train_sample_and_score(tmp_path, capsys):
    """`train-generator` of a pixelcnn on captioned RGB shapes (2 levels per channel: 8 joint
    tokens), then `sample --prompt --cfg`: images on the levels, the prompt saved beside them,
    and a rate given the captions."""
    from .test_text_generator import PROMPT, SPEC, TINY_TEXT, samples, train

    train(capsys, tmp_path / "gen", "--generator.family", "pixelcnn",
          "--generator.network.kind", "pixelcnn", "--generator.network.channels", "8",
          "--generator.network.layers", "2", "--generator.network.levels", "2", *TINY_TEXT)
    gen = Generator.load(tmp_path / "gen")
    assert (gen.what.kind, gen.what.vocab_size, gen.what.condition) == ("pixels", 8, "text")
    f = samples(capsys, tmp_path / "gen", tmp_path / "s.npz", "--prompt", PROMPT, "--n", "3",
                "--cfg", "2")
    assert f["images"].shape == (3, 8, 8, 3) and f["prompts"].tolist() == [PROMPT] * 3
    assert set(np.unique(f["images"]).tolist()) <= {0, 255}
    rate = ar_rate(gen, SPEC)
    assert rate["bits_per_dim_given_prompt"] > 0 and 0 < rate["bits_per_dim"] < 8 / 3
