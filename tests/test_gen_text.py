"""Text conditioning in the generator networks: the null prompt is the unconditional path,
guidance at scale 1 is the conditional prediction, prompts reach the output and padding does
not, and class-conditional models keep their parameters."""

from __future__ import annotations

import math

import pytest
import torch
from einops import rearrange

from latentlab.generators import PROCESSES
from latentlab.generators.autoregressive import ARConfig, ARTransformer
from latentlab.generators.denoisers.dit import DiT, DiTConfig
from latentlab.generators.denoisers.mlp import MLPDenoiser, MLPDenoiserConfig
from latentlab.generators.gan import GANConfig, GANDiscriminator, GANGenerator
from latentlab.generators.guidance import drop_labels, guided
from latentlab.nn.text import TextEncoder

B, C, S = 3, 4, 8  # batch, latent channels, latent side
V, N = 8, 6  # image token vocabulary, image tokens (autoregressive model)
VOCAB, L = 30, 8  # text vocabulary, prompt length (max_len)
PROMPTS = torch.tensor([[1, 5, 7, 0, 0, 0, 0, 0],  # begin id 1, then tokens, then pad id 0
                        [1, 9, 0, 0, 0, 0, 0, 0],
                        [1, 3, 4, 6, 2, 0, 0, 0]])




def encoder() -> TextEncoder:
    null_ids = torch.zeros(L, dtype=torch.long)
    null_ids[0] = 1
    return TextEncoder(VOCAB, L, null_ids, width=16, depth=1, heads=2)


def perturb(layers: list[torch.nn.Linear], seed: int = 1) -> None:
    """Give zero-initialised layers random weights, as training would."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for layer in layers:
            layer.weight.normal_(std=0.1)
            layer.bias.normal_(std=0.1)


def text_dit(cross: bool = True) -> DiT:
    """A tiny text DiT with every zero-initialised layer perturbed (the cross-attention output
    projections only if `cross`)."""
    torch.manual_seed(0)
    model = DiT(DiTConfig(width=32, depth=2, heads=2), C, S, text=encoder())
    layers = [b.modulation[-1] for b in model.blocks] + [model.final.modulation[-1],
                                                         model.final.linear]
    perturb(layers + ([b.cross.proj for b in model.blocks] if cross else []))
    return model


def inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, C, S, S, generator=g), torch.rand(B, generator=g)


def test_dit_null_prompt_is_the_unconditional_path():
    model, (x, t) = text_dit(), inputs()
    assert torch.equal(model.null_class, model.text.null_ids)
    assert torch.equal(model(x, t, model.text.null(B)), model(x, t, None))
    assert not torch.allclose(model(x, t, PROMPTS), model(x, t, None))


def test_dit_prompts_reach_the_output_and_padding_does_not():
    model, (x, t) = text_dit(), inputs()
    with torch.no_grad():  # the prompt reaches the output by cross-attention alone
        model.text_embed[-1].weight.zero_()
    out = model(x, t, PROMPTS)
    assert not torch.allclose(out, model(x, t, PROMPTS.roll(1, dims=0)))
    # what the encoder makes of padding (its embedding, the last position) is masked out
    with torch.no_grad():
        model.text.embed.weight[model.text.pad_id].normal_()
        model.text.pos[-1].normal_()
    torch.testing.assert_close(model(x, t, PROMPTS), out)


def test_dit_cross_attention_starts_as_the_identity():
    # only the pooled prompt reaches adaLN: with equal pooled embeddings the prompt cannot matter
    model, (x, t) = text_dit(cross=False), inputs()
    with torch.no_grad():
        model.text_embed[-1].weight.zero_()
    torch.testing.assert_close(model(x, t, PROMPTS), model(x, t, PROMPTS.roll(1, dims=0)))
    zero = DiT(DiTConfig(width=32, depth=1, heads=2), C, S, text=encoder())
    assert torch.equal(zero(x, t, PROMPTS), torch.zeros(B, C, S, S))


def test_dit_without_text_keeps_its_parameters():
    keys = set(DiT(DiTConfig(width=32, depth=1, heads=2), C, S, num_classes=5).state_dict())
    assert keys == {
        "patch_embed.weight", "patch_embed.bias", "class_embed.weight",
        *(f"time_embed.mlp.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")),
        *(f"blocks.0.{m}.{p}" for m in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2",
                                         "modulation.1") for p in ("weight", "bias")),
        *(f"final.{m}.{p}" for m in ("linear", "modulation.1") for p in ("weight", "bias"))}
    texted = set(DiT(DiTConfig(width=32, depth=1, heads=2), C, S, text=encoder()).state_dict())
    assert {k for k in texted if k.startswith("text.")}  # the encoder saves with the model
    with pytest.raises(ValueError, match="text, num_classes"):
        DiT(DiTConfig(width=32, depth=1, heads=2), C, S, num_classes=5, text=encoder())


def test_gradients_reach_every_parameter_of_a_text_dit():
    model, (x, t) = text_dit(), inputs()
    model(x, t, PROMPTS).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == [], missing


def test_guidance_and_label_dropout_take_prompts():
    model, (x, t) = text_dit(), inputs()
    null = model(x, t, None)
    torch.testing.assert_close(guided(model, 0.0, model.null_class)(x, t, PROMPTS), null)
    torch.testing.assert_close(guided(model, 1.0, model.null_class)(x, t, PROMPTS),
                               model(x, t, PROMPTS))
    prompts = PROMPTS.repeat(20, 1)  # (60, L)
    dropped = drop_labels(prompts, 0.5, model.null_class, torch.Generator().manual_seed(0))
    is_null = (dropped == model.null_class).all(1)
    kept = (dropped == prompts).all(1)
    assert (is_null | kept).all() and 10 < is_null.sum() < 50  # whole rows replaced
    assert torch.equal(drop_labels(prompts, 1.0, model.null_class), model.text.null(60))


@pytest.mark.parametrize("name", ["flow", "ddpm", "vpsde"])
def test_guidance_scale_one_samples_as_the_conditional_model(name):
    process, model = PROCESSES[name](), text_dit()
    sample = lambda **kw: process.sample(  # noqa: E731
        model, (B, C, S, S), PROMPTS, steps=3, generator=torch.Generator().manual_seed(0), **kw)
    conditional = sample()
    # equal up to the rounding of uncond + 1 * (cond - uncond), which the sampler amplifies
    close = dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(sample(guidance=1.0), conditional, **close)
    assert not torch.allclose(sample(guidance=3.0), conditional, **close)
    unconditional = process.sample(model, (B, C, S, S), None, steps=3,
                                   generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sample(guidance=0.0), unconditional, **close)


def text_ar() -> ARTransformer:
    torch.manual_seed(0)
    return ARTransformer(ARConfig(width=32, depth=2, heads=2), V, N, text=encoder()).eval()


def image_tokens(seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (B, N), generator=torch.Generator().manual_seed(seed))


def naive_log_prob(model: ARTransformer, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log p(x_i | prompt, x_<i) (B, N) from the stream [prompt, start token, x_0 .. x_{N-2}]
    built by hand, with attention written out (causal, prompt padding masked out) and the
    image positions picked by hand."""
    context = model.text(ids)
    start = model.class_embed.weight[0].expand(B, 1, -1)
    image = torch.cat([start, model.token_embed(x[:, :-1])], dim=1) + model.pos_embed
    h = torch.cat([model.prompt_embed(context.tokens), image], dim=1)  # (B, L + N, D)
    visible = torch.cat([context.mask, torch.ones(B, N, dtype=torch.bool)], dim=1)
    visible = torch.ones(L + N, L + N).tril().bool() & visible[:, None, :]  # (B, query, key)
    for block in model.blocks:
        q, k, v = rearrange(block.attn.qkv(block.norm1(h)), "b s (three n k) -> three b n s k",
                            three=3, n=2)
        weights = (q @ k.transpose(-1, -2) / math.sqrt(k.shape[-1]))
        weights = weights.masked_fill(~visible[:, None], -math.inf).softmax(-1)
        h = h + block.attn.proj(rearrange(weights @ v, "b n s k -> b s (n k)"))
        h = h + block.mlp(block.norm2(h))
    logp = model.head(model.norm(h)).log_softmax(-1)[:, L:]  # (B, N, V), image positions
    return logp.gather(-1, x[..., None]).squeeze(-1)


def test_ar_null_prompt_is_the_unconditional_path():
    model, x = text_ar(), image_tokens()
    assert torch.equal(model.null_class, model.text.null_ids)
    assert torch.equal(model(x, model.text.null(B)), model(x, None))
    assert torch.equal(model.log_prob(x, model.text.null(B)), model.log_prob(x))
    assert not torch.allclose(model(x, PROMPTS), model(x))


def test_ar_scores_the_image_tokens_alone():
    model, x = text_ar(), image_tokens()
    logp = model.log_prob(x, PROMPTS)
    assert logp.shape == (B, N) and model(x, PROMPTS).shape == (B, N, V)
    torch.testing.assert_close(logp, naive_log_prob(model, x, PROMPTS))
    # padding is invisible: what the encoder makes of it changes nothing
    with torch.no_grad():
        model.text.embed.weight[model.text.pad_id].normal_()
        model.text.pos[-1].normal_()
    torch.testing.assert_close(model.log_prob(x, PROMPTS), logp)


def test_ar_kv_cache_over_the_prompt_matches_full_recomputation():
    model, x = text_ar(), image_tokens()
    full = model(x, PROMPTS)  # (B, N, V)
    cache = None
    for i in range(N):
        logits, cache = model.next_token_logits(x[:, :i], PROMPTS, cache)
        assert cache.length == L + i + 1 and cache.keys.shape == (B, L + i + 1)
        torch.testing.assert_close(logits, full[:, i], rtol=1e-5, atol=1e-5)
    for guidance in (None, 2.0):
        drawn = [model.sample(B, PROMPTS, guidance=guidance, use_cache=use_cache,
                              generator=torch.Generator().manual_seed(0))
                 for use_cache in (True, False)]
        assert torch.equal(*drawn)


def test_ar_guidance_scale_one_is_the_conditional_model():
    model, x = text_ar(), image_tokens()
    for i in (0, 3):
        conditional, _ = model.next_token_logits(x[:, :i], PROMPTS)
        guided_logits, cache = model.next_token_logits(x[:, :i], PROMPTS, guidance=1.0)
        torch.testing.assert_close(guided_logits, conditional)
        assert cache.keys.shape[0] == 2 * B  # conditional rows, then null-prompt rows
        unconditional, _ = model.next_token_logits(x[:, :i], None)
        torch.testing.assert_close(model.next_token_logits(x[:, :i], PROMPTS, guidance=0.0)[0],
                                   unconditional)
    draw = lambda **kw: model.sample(B, PROMPTS, generator=torch.Generator().manual_seed(0),  # noqa: E731
                                     **kw)
    assert torch.equal(draw(guidance=1.0), draw())


def text_gan(shape: tuple[int, ...]) -> tuple[GANGenerator, GANDiscriminator]:
    torch.manual_seed(0)
    cfg = GANConfig(noise_dim=8, width=8, depth=2)
    return GANGenerator(cfg, shape, text=encoder()), GANDiscriminator(cfg, shape, text=encoder())


@pytest.mark.parametrize("shape", [(2,), (3, 8, 8)])
def test_gan_null_prompt_is_the_unconditional_path_and_prompts_matter(shape):
    generator, discriminator = text_gan(shape)
    noise = torch.randn(B, 8, generator=torch.Generator().manual_seed(0))
    fake = generator(noise, PROMPTS)
    null = generator.text.null(B)
    assert torch.equal(generator(noise, null), generator(noise, None))
    assert torch.equal(discriminator(fake, null), discriminator(fake, None))
    assert not torch.allclose(generator(noise, PROMPTS.roll(1, dims=0)), fake)
    # the projection term: the logit moves with the prompt
    assert not torch.allclose(discriminator(fake, PROMPTS.roll(1, dims=0)),
                              discriminator(fake, PROMPTS))
    with pytest.raises(ValueError, match="prompt ids"):
        generator(noise, torch.zeros(B, dtype=torch.long))
    with pytest.raises(ValueError, match="text, num_classes"):
        GANDiscriminator(GANConfig(), shape, num_classes=3, text=encoder())


def test_mlp_denoiser_takes_prompts():
    torch.manual_seed(0)
    model = MLPDenoiser(2, MLPDenoiserConfig(width=16, depth=1), text=encoder())
    perturb([model.out[-1]])
    x, t = torch.randn(B, 2), torch.rand(B)
    assert torch.equal(model(x, t, model.text.null(B)), model(x, t, None))
    assert not torch.allclose(model(x, t, PROMPTS), model(x, t, None))
    torch.testing.assert_close(guided(model, 1.0, model.null_class)(x, t, PROMPTS),
                               model(x, t, PROMPTS))


def test_class_models_have_no_text_parameters():
    cfg = GANConfig(noise_dim=8, width=8)
    models = [ARTransformer(ARConfig(width=32, depth=1, heads=2), V, N, num_classes=3),
              GANGenerator(cfg, (2,), 3), GANDiscriminator(cfg, (2,), 3),
              MLPDenoiser(2, MLPDenoiserConfig(width=16), num_classes=3)]
    for model in models:
        assert model.text is None and isinstance(getattr(model, "null_class", 0), int)
        assert not [k for k in model.state_dict() if k.startswith(("text", "prompt"))]
