"""Text conditioning in the generator networks: the null prompt is the unconditional path,
guidance at scale 1 is the conditional prediction, prompts reach the output and padding does
not, and class-conditional models keep their parameters."""

from __future__ import annotations

import pytest
import torch

from latentlab.generators import PROCESSES
from latentlab.generators.denoisers.dit import DiT, DiTConfig
from latentlab.generators.guidance import drop_labels, guided
from latentlab.nn.text import TextEncoder

B, C, S = 3, 4, 8  # batch, latent channels, latent side
VOCAB, L = 30, 8  # text vocabulary, prompt length (max_len)
PROMPTS = torch.tensor([[1, 5, 7, 0, 0, 0, 0, 0],  # begin id 1, then tokens, then pad id 0
                        [1, 9, 0, 0, 0, 0, 0, 0],
                        [1, 3, 4, 6, 2, 0, 0, 0]])


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
