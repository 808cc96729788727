"""Masked generative transformer (MaskGIT): the cosine schedules of training and decoding,
decoding with one step per token equal to greedy sequential filling, every token decoded,
bidirectional attention, class / text conditioning and guidance, the masked loss, a short
training run that covers the modes of a token source, and the pipeline (train, sample, resume,
save / load) on digits."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from latentlab.cli import main
from latentlab.data.config import DataConfig
from latentlab.generation.config import GeneratorConfig, GeneratorRunConfig
from latentlab.generation.generator import Generator
from latentlab.generation.sample import sample_to_file
from latentlab.generation.train import train_generator
from latentlab.generators.maskgit import (
    MaskGITConfig,
    MaskGITTransformer,
    mask_counts,
    masked_counts,
    masked_loss,
    random_mask,
)
from latentlab.nn.text import TextEncoder
from latentlab.recipes.train import train_tokenizer
from latentlab.training.config import TrainConfig

from .conftest import replace_train
from .test_generation import MIXTURE, coverage, mixture_run, tiny_tokenizer_run

V, N, K = 8, 9, 3  # vocabulary, tokens (a 3x3 grid), classes


def tiny(num_classes: int = K, seed: int = 0, text: TextEncoder | None = None,
         **kw) -> MaskGITTransformer:
    """A tiny model with N(0, 1) weights: smaller random weights make a transformer whose
    outputs barely depend on its inputs (every position predicts the same token)."""
    torch.manual_seed(seed)
    model = MaskGITTransformer(MaskGITConfig(width=16, depth=2, heads=2, **kw), V, N,
                               num_classes, text)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("text."):
                p.copy_(torch.randn(p.shape, generator=g))
    return model.eval()


def tokens(b: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (b, N), generator=torch.Generator().manual_seed(seed))


def test_config_validation():
    with pytest.raises(ValueError, match="heads"):
        MaskGITConfig(width=30, heads=4)
    with pytest.raises(ValueError, match="choice_temperature"):
        MaskGITConfig(choice_temperature=-1.0)
    with pytest.raises(ValueError, match="vocab_size"):
        MaskGITTransformer(MaskGITConfig(), 0, N)
    with pytest.raises(ValueError, match="steps"):
        masked_counts(N, 0)


def test_training_masks_follow_the_cosine_schedule():
    u = torch.tensor([0.0, 1 / 3, 0.5, 1.0])
    # ceil(16 cos(pi/2 u)): all of them, ceil(13.86), ceil(11.31), and at least one
    assert mask_counts(u, 16).tolist() == [16, 14, 12, 1]
    # random_mask draws u first, then which positions: the counts are those of its u
    b, n = 2000, 16
    draws = torch.rand(b, generator=torch.Generator().manual_seed(3))
    mask = random_mask(b, n, generator=torch.Generator().manual_seed(3))
    assert mask.dtype == torch.bool and mask.shape == (b, n)
    torch.testing.assert_close(mask.sum(1), mask_counts(draws, n))
    # the mean masked fraction is E[ceil(n cos(pi/2 u))] / n ~ 2/pi + 1/(2n) (the ceiling)
    assert abs(mask.float().mean().item() - (2 / math.pi + 0.5 / n)) < 0.02
    # every position is equally likely to be masked
    per_position = mask.float().mean(0)
    assert (per_position - per_position.mean()).abs().max() < 0.05


def test_decoding_counts_decrease_to_zero():
    # floor(256 cos(pi/2 k/8)) for k = 1..8: MaskGIT's default 8 steps on a 16x16 grid
    assert masked_counts(256, 8) == [251, 236, 212, 181, 142, 97, 49, 0]
    assert masked_counts(N, N) == list(range(N - 1, -1, -1))  # one token per step
    assert masked_counts(4, 10) == [3, 2, 1, 0]  # more steps than tokens act as one per token
    assert masked_counts(5, 1) == [0]
    for n in (1, 2, 7, 16, 49, 256):
        for steps in (1, 2, 3, 8, 12, 50):
            counts = masked_counts(n, steps)
            assert len(counts) == min(n, steps) and counts[-1] == 0
            assert all(a > b for a, b in zip([n, *counts], counts, strict=False)), (n, steps)
            # the cosine schedule wherever it already decides a token per step (MaskGIT's
            # clamp lowers the count only where the floor would leave a step empty)
            s = len(counts)
            for k, c in enumerate(counts, start=1):
                assert c <= math.floor(n * math.cos(math.pi / 2 * k / s) + 1e-9)


def greedy_fill(model: MaskGITTransformer, cond: torch.Tensor | None, n: int) -> torch.Tensor:
    """The reference: N steps, each filling the one masked position whose most likely token is
    the most probable, with that token."""
    x = torch.full((n, N), model.mask_id, dtype=torch.long)
    for _ in range(N):
        probs = model(x, cond).float().softmax(-1)  # (n, N, V)
        best, token = probs.max(-1)  # (n, N)
        best = best.masked_fill(x != model.mask_id, -1.0)  # only masked positions compete
        where = best.argmax(1)  # (n,)
        rows = torch.arange(n)
        x[rows, where] = token[rows, where]
    return x


@pytest.mark.parametrize("num_classes", [0, K])
def test_one_step_per_token_equals_greedy_sequential_filling(num_classes):
    model = tiny(num_classes)
    cond = torch.tensor([0, 1, 2, 1]) if num_classes else None
    decoded = model.sample(4, cond, steps=N, temperature=0.0, choice_temperature=0.0)
    torch.testing.assert_close(decoded, greedy_fill(model, cond, 4))
    # more steps than tokens change nothing; fewer decide several tokens at once
    torch.testing.assert_close(model.sample(4, cond, steps=3 * N, temperature=0.0,
                                            choice_temperature=0.0), decoded)
    assert not torch.equal(model.sample(4, cond, steps=2, temperature=0.0,
                                        choice_temperature=0.0), decoded)


@pytest.mark.parametrize("steps", [1, 2, 3, 5, N, 50])
def test_every_token_is_decoded_after_the_last_step(steps):
    model = tiny()
    g = torch.Generator().manual_seed(steps)
    x = model.sample(16, torch.arange(16) % K, steps=steps, guidance=2.0, generator=g)
    assert x.shape == (16, N) and x.dtype == torch.int64
    assert x.min() >= 0 and x.max() < V  # no [MASK] (index V) left


def test_the_network_is_bidirectional():
    model, x = tiny(), tokens(2)
    cond = torch.tensor([0, 2])
    logits = model(x, cond)
    assert logits.shape == (2, N, V) and model.num_parameters > 0
    later = x.clone()
    later[:, -1] = model.mask_id  # mask the last token: the first position's output moves
    assert (model(later, cond)[:, 0] - logits[:, 0]).abs().max() > 1e-3
    # as a gradient: the output at position 0 depends on the embedding of every position
    emb = model.token_embed.weight
    grad = torch.autograd.grad(model(x, cond)[:, 0].sum(), emb)[0]
    assert (grad[x[0]].abs().sum(-1) > 0).all()


def test_class_conditioning_and_guidance():
    model, x = tiny(), tokens(3)
    cond = torch.tensor([0, 1, 2])
    conditional, unconditional = model.logits(x, cond), model.logits(x, None)
    assert (conditional - unconditional).abs().max() > 1e-3  # the class acts
    torch.testing.assert_close(model.logits(x, cond, 1.0), conditional, rtol=0, atol=1e-5)
    torch.testing.assert_close(model.logits(x, cond, 0.0), unconditional, rtol=0, atol=1e-5)
    draw = lambda **kw: model.sample(3, generator=torch.Generator().manual_seed(0), **kw)  # noqa: E731
    assert torch.equal(draw(cond=cond), draw(cond=cond))  # seeded: deterministic
    assert not torch.equal(draw(cond=cond), draw(cond=torch.tensor([2, 0, 1])))
    assert not torch.equal(draw(cond=cond, guidance=4.0), draw(cond=cond))
    assert not torch.equal(draw(cond=cond), draw(cond=cond, choice_temperature=0.0))
    with pytest.raises(ValueError, match="guidance"):
        model.sample(2, None, guidance=2.0)
    with pytest.raises(ValueError, match="cond"):
        tiny(num_classes=0)(x, cond)


def test_text_conditioning_reads_the_prompt_but_not_its_padding():
    null = torch.tensor([1, 0, 0, 0])  # the begin token, then padding (pad id 0)
    text = TextEncoder(6, 4, null, pad_id=0, width=8, depth=1, heads=2)
    model = tiny(num_classes=0, text=text)
    assert model.prompt_len == 4 and torch.equal(model.null_class, null)
    x = tokens(2)
    prompts = torch.tensor([[1, 3, 4, 0], [1, 5, 0, 0]])
    logits = model(x, prompts)
    assert logits.shape == (2, N, V)
    assert (logits - model(x, None)).abs().max() > 1e-3
    with torch.no_grad():  # what sits at padding positions is never seen
        text.embed.weight[0].add_(1.0)
    torch.testing.assert_close(model(x, prompts), logits)
    torch.testing.assert_close(model.logits(x, prompts, 0.0), model.logits(x, None))
    assert model.sample(2, prompts, steps=3, guidance=2.0).max() < V
    with pytest.raises(ValueError, match="text, num_classes"):
        MaskGITTransformer(MaskGITConfig(), V, N, K, text)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=["float64", "bfloat16"])
def test_dtype_follows_the_weights(dtype):
    reference, model = tiny(), tiny().to(dtype)
    x, cond = tokens(3), torch.tensor([0, 1, 2])
    out, want = model(x, cond), reference(x, cond)
    assert out.dtype == dtype and model.logits(x, cond).dtype == torch.float32
    error = (out.double() - want.double()).norm() / want.double().norm()
    assert error < (1e-5 if dtype == torch.float64 else 0.05), error
    drawn = model.sample(3, cond, steps=3, guidance=2.0)
    assert drawn.dtype == torch.int64 and drawn.max() < V


def test_the_loss_scores_masked_positions_only():
    model, x = tiny(), tokens(4)
    cond = torch.tensor([0, 1, 2, 3])  # 3 = the null class
    out = masked_loss(model, x, cond, generator=torch.Generator().manual_seed(7))
    mask = random_mask(4, N, generator=torch.Generator().manual_seed(7))
    logits = model(x.masked_fill(mask, model.mask_id), cond)
    ce = F.cross_entropy(logits.flatten(0, 1), x.flatten(), reduction="none").view(4, N)
    torch.testing.assert_close(out.per_item, (ce * mask).sum(1))
    torch.testing.assert_close(out.masked, mask.sum(1))
    torch.testing.assert_close(out.loss, ce[mask].mean())


# K distinct tokens at every position: unconditionally no token is likelier than another, so
# which pattern a grid follows is decided by sampling, not by the order confidence imposes
PATTERNS = torch.rand(N, V, generator=torch.Generator().manual_seed(11)).argsort(1)[:, :K].T


def pattern_batch(b: int, g: torch.Generator, flip: float = 0.05):
    """Items of class k are pattern k with each token redrawn with probability `flip`: K modes
    whose tokens must agree with each other."""
    y = torch.randint(0, K, (b,), generator=g)
    noise = torch.randint(0, V, (b, N), generator=g)
    return torch.where(torch.rand(b, N, generator=g) < flip, noise, PATTERNS[y]), y


def modes(x: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Share of grids within Hamming distance 2 of a pattern, the share of grids nearest each
    pattern (K,), and each grid's nearest pattern."""
    nearest = (x[:, None] != PATTERNS[None]).sum(-1).min(1)  # over (B, K) Hamming distances
    shares = torch.bincount(nearest.indices, minlength=K) / len(x)
    return (nearest.values <= 2).float().mean().item(), shares, nearest.indices


def test_training_covers_every_mode_and_decodes_coherent_grids():
    torch.manual_seed(0)
    model = MaskGITTransformer(MaskGITConfig(width=32, depth=2, heads=2), V, N, K)
    steps = 200
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 - i / steps)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x, y = pattern_batch(64, g)
        y = torch.where(torch.rand(64, generator=g) < 0.3, K, y)  # label dropout
        loss = masked_loss(model, x, y).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        decay.step()
    model.eval()
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(300) % K
    coherent, shares, nearest = modes(model.sample(300, labels, steps=3, generator=g))
    assert coherent > 0.9 and (nearest == labels).float().mean() > 0.9, (coherent, shares)
    # unconditionally, one token a step: every mode, each grid one pattern's
    coherent, shares, _ = modes(model.sample(300, None, steps=N, generator=g))
    assert coherent > 0.8 and shares.min() > 0.1, (coherent, shares)
    # all at once, each token is drawn from its own marginal: grids blend the patterns
    coherent, _, _ = modes(model.sample(300, None, steps=1, generator=g))
    assert coherent < 0.2, coherent


@pytest.mark.slow
def test_maskgit_over_vq_tokens_covers_the_mixture(tmp_path):
    """As the autoregressive prior's test (test_generation.py): one token per item."""
    from latentlab.recipes.presets import TOKENIZER_PRESETS

    tok_cfg = replace_train(TOKENIZER_PRESETS["mixture-vq"], steps=300, eval_every=0,
                            checkpoint_every=1000, log_every=100)
    train_tokenizer(dataclasses.replace(tok_cfg, data=DataConfig(spec=MIXTURE)), tmp_path / "tok")
    cfg = dataclasses.replace(mixture_run("maskgit", steps=300, lr=1e-3), tokenizer=str(
        tmp_path / "tok"), generator=GeneratorConfig(family="maskgit", network=MaskGITConfig(
            width=64, depth=2, heads=2)))
    train_generator(cfg, tmp_path / "gen")
    sample_to_file(tmp_path / "gen", 1600, tmp_path / "s.npz")
    with np.load(tmp_path / "s.npz") as f:
        shares, near, right_class = coverage(f["vectors"], f["labels"])
    assert shares.min() > 0.05 and near > 0.7 and right_class > 0.7, (shares, near, right_class)


def test_pipeline_trains_samples_resumes_and_round_trips(tmp_path, tiny_config):
    """train-generator on a tiny digits VQ tokenizer, resumed; the CLI's sample with labels,
    decoding steps and guidance; the saved generator reloads to the same samples."""
    tok = tiny_tokenizer_run(tiny_config, tmp_path, "vq", steps=10)
    cfg = GeneratorRunConfig(
        tokenizer=str(tok), data=DataConfig(spec="digits"),
        generator=GeneratorConfig(family="maskgit", steps=4, network=MaskGITConfig(
            width=16, depth=1, heads=2)),
        train=TrainConfig(steps=6, batch_size=16, warmup=2, log_every=3, eval_every=3,
                          checkpoint_every=3))
    metrics = train_generator(cfg, tmp_path / "gen")
    assert metrics["modelled"]["kind"] == "indices" and metrics["steps"] == 6
    assert math.isfinite(metrics["test"]["masked_ce"]) and "bits_per_token" not in metrics["test"]
    assert main(["train-generator", "--out", str(tmp_path / "gen"), "--resume",
                 "--train.steps", "9"]) == 0
    assert (tmp_path / "gen" / "checkpoints" / "step_00000009").is_dir()
    code = main(["sample", "--generator", str(tmp_path / "gen"), "--n", "6", "--labels", "3,4",
                 "--steps", "2", "--cfg", "2.0", "--out", str(tmp_path / "s.npz")])
    assert code == 0
    with np.load(tmp_path / "s.npz") as f:
        assert f["images"].shape == (6, 8, 8, 1) and f["labels"].tolist() == [3, 4] * 3
    generator = Generator.load(tmp_path / "gen")
    assert generator.family == "maskgit" and generator.network.cfg.width == 16
    generator.save(tmp_path / "copy")
    loaded = Generator.load(tmp_path / "copy")
    labels = torch.arange(5)
    draw = lambda gen, seed=0: gen.sample(5, labels, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(draw(generator), draw(loaded))
    assert not torch.equal(draw(loaded), draw(loaded, seed=1))
