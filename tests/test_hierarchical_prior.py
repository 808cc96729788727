"""VQ-VAE-2's pair of PixelCNN priors over the top grid then the bottom grid: causal in the
sequence's order, exact likelihood (sums to one by enumeration), the bottom conditioned on the
top, next-token logits equal to teacher forcing (what the codec codes with), and a short
training run on a two-level source whose bottom follows its top."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from latentlab.generators.hierarchical import HierarchicalPixelCNN, top_side
from latentlab.generators.pixelcnn import PixelCNNConfig

V = 3


def tiny(vocab: int = V, n: int = 2, classes: int = 2, channels: int = 8
         ) -> HierarchicalPixelCNN:
    torch.manual_seed(0)
    cfg = PixelCNNConfig(channels=channels, layers=3)
    return HierarchicalPixelCNN(cfg, vocab, 5 * n * n, classes).eval()


def test_the_sequence_must_be_a_top_grid_and_a_bottom_grid_of_twice_its_side():
    assert top_side(5) == 1 and top_side(20) == 2 and top_side(80) == 4
    for bad in (4, 16, 21):
        with pytest.raises(ValueError, match="not a top grid"):
            top_side(bad)


def test_receptive_field_is_causal_in_the_sequence_order():
    model = tiny()
    x = torch.randint(V, (1, 20), generator=torch.Generator().manual_seed(1))
    base = model(x, torch.tensor([1]))
    for t in range(20):
        later = x.clone()
        later[:, t:] = (later[:, t:] + 1) % V  # every token from t on changes
        logits = model(later, torch.tensor([1]))
        torch.testing.assert_close(logits[:, :t], base[:, :t])  # positions before t do not
        if t < 19:  # and later ones read token t
            assert not torch.allclose(logits[:, t + 1:], base[:, t + 1:])


def test_the_bottom_prior_reads_the_top_grid():
    model = tiny()
    x = torch.randint(V, (4, 20), generator=torch.Generator().manual_seed(2))
    other = x.clone()
    other[:, 0] = (other[:, 0] + 1) % V  # one top token
    a, b = model(x, None), model(other, None)
    # the top-left top token covers the bottom grid's top-left 2x2 block (and more, by conv)
    assert (a[:, 4:] - b[:, 4:]).abs().amax() > 1e-3


def test_likelihood_sums_to_one_over_every_sequence():
    """n = 1: one top token and a 2x2 bottom grid over 2 values: the 32 sequences."""
    model = tiny(vocab=2, n=1)
    seqs = torch.tensor(list(itertools.product(range(2), repeat=5)))  # (32, 5)
    for label in (0, 1, 2):  # 2 = the null class
        logp = model.log_prob(seqs, torch.full((32,), label)).double().sum(1)
        torch.testing.assert_close(logp.exp().sum(), torch.tensor(1.0, dtype=torch.double))


def test_next_token_logits_are_the_teacher_forced_ones():
    model = tiny()
    x = torch.randint(V, (3, 20), generator=torch.Generator().manual_seed(3))
    cond = torch.tensor([0, 1, 2])
    full = model(x, cond).float()
    for i in (0, 3, 4, 5, 19):
        logits, cache = model.next_token_logits(x[:, :i], cond)
        torch.testing.assert_close(logits, full[:, i], rtol=1e-5, atol=1e-5)
        assert cache is None
    guided, _ = model.next_token_logits(x[:2, :7], cond[:2], guidance=2.0)
    uncond, _ = model.next_token_logits(x[:2, :7], torch.tensor([2, 2]))
    torch.testing.assert_close(guided, uncond + 2.0 * (full[:2, 7] - uncond))


def two_level_source(b: int, g: torch.Generator) -> torch.Tensor:
    """Top grid 2x2 all one value k, the bottom grid 4x4 all k too: (B, 20)."""
    k = torch.randint(V, (b, 1), generator=g)
    return k.expand(b, 20).clone()


def test_training_learns_a_bottom_that_follows_its_top():
    model = tiny(classes=0, channels=16).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        x = two_level_source(64, g)
        loss = -model.log_prob(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    s = model.sample(300, generator=torch.Generator().manual_seed(1))
    top_k = s[:, 0]
    follows = (s[:, 4:] == top_k[:, None]).all(1).float().mean()
    shares = torch.bincount(top_k, minlength=V).float() / len(s)
    assert follows > 0.9 and shares.min() > 0.2, (follows, shares)


def test_the_codec_codes_hvq_tokens_with_the_pair_of_priors_at_their_likelihood():
    """VQ-VAE-2 in the codec: an hvq tokenizer (8x8 digits tiles: a 2x2 top grid, a 4x4 bottom
    one, 20 tokens) and its two PixelCNNs; tokens and images round-trip, payload = -log2 P."""
    import numpy as np

    from latentlab.codec import CodecModel, compress, decompress
    from latentlab.codec.codec import detokenize
    from latentlab.tokenizers.bottlenecks import HVQConfig
    from latentlab.tokenizers.conv import ConvConfig
    from latentlab.tokenizers.tokenizer import Tokenizer, TokenizerConfig

    from .test_codec import digits

    torch.manual_seed(0)
    tokenizer = Tokenizer(TokenizerConfig(
        latent_channels=4, arch=ConvConfig(channels=8, ch_mult=(1, 2)),
        bottleneck=HVQConfig(codebook_size=8, hidden=16)), 1)
    tokenizer.train()(torch.rand(64, 1, 8, 8) * 2 - 1)  # initialise both codebooks
    prior = tiny(vocab=8, n=2, classes=0)
    for p in (prior.top, prior.bottom):
        torch.nn.init.normal_(p.head[-1].weight, std=0.5)  # peaked, varied distributions
    model = CodecModel(tokenizer, prior, (4, 4))
    assert model.tile == (8, 8) and model.tokens == (20,)
    images = digits(24)
    encoded = compress(model, images, chunk=5)
    decoded = decompress(model, encoded.data)
    assert encoded.tokens.shape == (24, 20) and torch.equal(decoded.tokens, encoded.tokens)
    want = detokenize(model, encoded.tokens)  # (T, C, 8, 8): one tile per digit
    for out, tile in zip(decoded.images, want, strict=True):
        np.testing.assert_array_equal(out, tile.transpose(1, 2, 0))
    with torch.no_grad():
        nll_bits = -float(prior.log_prob(encoded.tokens).double().sum()) / math.log(2)
    assert abs(encoded.bits - nll_bits) <= 0.001 * nll_bits, (encoded.bits, nll_bits)
