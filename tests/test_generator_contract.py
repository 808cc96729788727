"""The contract every generator family keeps, for each network it has (as the bottlenecks keep
theirs in test_bottleneck_contract.py): a save/load round trip, eval determinism, dtype and
device following the inputs, classifier-free guidance at scale 1 equal to the conditional
prediction, and samples in the public format.

Networks start from weights drawn at random (not their zero-output initialisations), so that
every prediction depends on its input, its time and its class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from latentlab.errors import UserError
from latentlab.generation.config import GeneratorConfig, GeneratorRunConfig
from latentlab.generation.generator import Generator
from latentlab.generation.models import Modelled
from latentlab.generation.sample import sample_to_file
from latentlab.generators.autoregressive import ARConfig
from latentlab.generators.denoisers.dit import DiTConfig
from latentlab.generators.denoisers.mlp import MLPDenoiserConfig
from latentlab.generators.gan import GANConfig
from latentlab.generators.guidance import guided
from latentlab.generators.pixelcnn import PixelCNNConfig
from latentlab.tokenizers.bottlenecks import IdentityConfig, VQConfig
from latentlab.tokenizers.conv import ConvConfig
from latentlab.tokenizers.tokenizer import Tokenizer, TokenizerConfig

K, V = 3, 16  # classes, vocabulary of the token grids
VECTOR, LATENT, GRID = (3,), (2, 4, 4), (4, 4)  # (D,), (C, h, w) of an 8x8 image, (h, w)
PIXELS, LEVELS = (1, 8, 8), 4  # an 8x8 grey image at 4 levels (pixelcnn without tokenizer)
N = 5  # samples per draw


@dataclass(frozen=True)
class Case:
    family: str
    network: str  # the network's kind
    what: Modelled


CASES = {
    **{f"{f}-mlp": Case(f, "mlp", Modelled(VECTOR, "latents", K)) for f in ("flow", "ddpm",
                                                                           "vpsde")},
    **{f"{f}-dit": Case(f, "dit", Modelled(LATENT, "latents", K)) for f in ("flow", "ddpm",
                                                                           "vpsde")},
    "ar": Case("ar", "ar", Modelled(GRID, "indices", K, V)),
    "pixelcnn": Case("pixelcnn", "pixelcnn", Modelled(GRID, "indices", K, V)),
    "pixelcnn-pixels": Case("pixelcnn", "pixelcnn", Modelled(PIXELS, "pixels", K, LEVELS)),
    "gan-vector": Case("gan", "gan", Modelled(VECTOR, "latents", K)),
    "gan-map": Case("gan", "gan", Modelled(LATENT, "latents", K)),
}
GUIDED = [name for name in CASES if CASES[name].family != "gan"]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

names = pytest.mark.parametrize("name", list(CASES))
devices = pytest.mark.parametrize("device", DEVICES)


def generator_config(case: Case) -> GeneratorConfig:
    """Tiny widths of every family (the one place that knows the config's layout)."""
    network = {"mlp": MLPDenoiserConfig(width=16, depth=1, time_embed=8),
               "dit": DiTConfig(width=16, depth=1, heads=2, patch_size=2, mlp_ratio=2.0),
               "ar": ARConfig(width=16, depth=1, heads=2, mlp_ratio=2.0),
               "gan": GANConfig(noise_dim=4, width=8),
               "pixelcnn": PixelCNNConfig(channels=8, layers=2, levels=LEVELS)}[case.network]
    return GeneratorConfig(family=case.family, network=network, steps=2)


def build(name: str, seed: int = 0, tokenizer: str = "") -> Generator:
    """The generator of case `name` with N(0, 0.3^2) weights drawn from `seed`, in eval mode."""
    case = CASES[name]
    cfg = GeneratorRunConfig(tokenizer=tokenizer, generator=generator_config(case))
    generator = Generator(cfg, case.what)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in generator.network.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return generator.eval()


def draw(generator: Generator, seed: int = 0, guidance: float | None = None) -> torch.Tensor:
    """N samples for the labels 0, 1, 2, 0, 1 with randomness from `seed`."""
    device = next(generator.parameters()).device
    g = torch.Generator(device).manual_seed(seed)
    labels = torch.arange(N) % K
    return generator.sample(N, labels, guidance=guidance, generator=g)


def network_inputs(generator: Generator, dtype: torch.dtype, device: str) -> tuple:
    """Arguments of one call of the network: (x_t, t, cond) for a denoiser, (tokens, cond) for
    the autoregressive transformer, (noise, cond) for the GAN generator."""
    g = torch.Generator().manual_seed(5)
    cond = (torch.arange(N) % K).to(device)
    if generator.family in ("ar", "pixelcnn"):
        shape = (N, generator.network.seq_len)
        return torch.randint(0, generator.what.vocab_size, shape, generator=g).to(device), cond
    if generator.family == "gan":
        noise = torch.randn(N, generator.network.cfg.noise_dim, generator=g)
        return noise.to(device, dtype), cond
    x = torch.randn(N, *generator.what.shape, generator=g)
    t = torch.rand(N, generator=g)  # times are float32 or better (generators.time)
    return x.to(device, dtype), t.to(device, torch.promote_types(dtype, torch.float32)), cond


@names
def test_save_load_round_trip(name, tmp_path):
    generator = build(name)
    generator.save(tmp_path / "gen")
    loaded = Generator.load(tmp_path / "gen")  # a fresh initialisation, overwritten
    assert (loaded.cfg, loaded.what, loaded.training) == (generator.cfg, generator.what, False)
    a, b = generator.network.state_dict(), loaded.network.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    args = network_inputs(generator, torch.float32, "cpu")
    assert torch.equal(generator.network(*args), loaded.network(*args))
    assert torch.equal(draw(generator), draw(loaded))
    assert not torch.equal(draw(build(name, seed=1)), draw(loaded))  # other weights differ


@names
@devices
def test_eval_is_deterministic_and_follows_the_device(name, device):
    generator = build(name).to(device)
    first, second = draw(generator), draw(generator)
    assert first.device.type == device
    assert first.shape == (N, *CASES[name].what.shape)
    assert torch.equal(first, second)
    assert not torch.equal(first, draw(generator, seed=1))
    args = network_inputs(generator, torch.float32, device)
    assert generator.network(*args).device.type == device


@names
@devices
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=["float64", "bfloat16"])
def test_dtype_follows_the_inputs(name, device, dtype):
    reference = build(name).to(device)
    generator = build(name).to(device, dtype)
    args = network_inputs(generator, dtype, device)
    out = generator.network(*args)
    want = reference.network(*network_inputs(reference, torch.float32, device))
    assert out.dtype == dtype  # the logits of the ar transformer too
    error = (out.double() - want.double()).norm() / want.double().norm()
    assert error < (1e-5 if dtype == torch.float64 else 0.05), error
    items = draw(generator)
    if CASES[name].what.kind == "indices":
        assert items.dtype == torch.int64 and items.min() >= 0 and items.max() < V
        # probabilities for the codec are fp32 whatever the network's dtype (its docstring)
        assert generator.network.log_prob(*args).dtype == torch.float32
        return
    assert items.dtype == dtype and torch.isfinite(items).all()
    if generator.process is None:
        return
    # the same start, a deterministic sampler and times bfloat16 cannot hold (thirds): samplers
    # keep times in float32 at least, since bfloat16 would round t * 1000 to steps of 4
    noise = torch.randn(N, *CASES[name].what.shape, generator=torch.Generator().manual_seed(3))
    cond = (torch.arange(N) % K).to(device)
    sampler = {"flow": "euler", "ddpm": "ddim", "vpsde": "ode"}[generator.family]

    def run(g: Generator, dtype: torch.dtype) -> torch.Tensor:
        return g.process.sample(g.network, noise.shape, cond, steps=3, sampler=sampler,
                                noise=noise.to(device, dtype)).double()

    low, want = run(generator, dtype), run(reference, torch.float32)
    error = (low - want).norm() / want.norm()
    assert error < (1e-4 if dtype == torch.float64 else 0.05), error  # float32's own rounding


@pytest.mark.parametrize("name", GUIDED)
def test_guidance_at_scale_1_is_the_conditional_prediction(name):
    generator = build(name)
    net, null = generator.network, generator.network.null_class
    if generator.family in ("ar", "pixelcnn"):
        prefix = network_inputs(generator, torch.float32, "cpu")[0][:, :7]
        cond = torch.arange(N) % K
        logits = lambda c, scale=None: net.next_token_logits(prefix, c, guidance=scale)[0]  # noqa: E731
        conditional, unconditional = logits(cond), logits(None)
        torch.testing.assert_close(logits(cond, 1.0), conditional, rtol=0, atol=1e-5)
        torch.testing.assert_close(logits(cond, 0.0), unconditional, rtol=0, atol=1e-5)
    else:
        x, t, cond = network_inputs(generator, torch.float32, "cpu")
        conditional, unconditional = net(x, t, cond), net(x, t, torch.full_like(cond, null))
        torch.testing.assert_close(guided(net, 1.0, null)(x, t, cond), conditional,
                                   rtol=0, atol=1e-5)
        torch.testing.assert_close(guided(net, 0.0, null)(x, t, cond), unconditional,
                                   rtol=0, atol=1e-5)
    assert (conditional - unconditional).abs().max() > 1e-3  # the class acts
    torch.testing.assert_close(draw(generator, guidance=1.0).double(), draw(generator).double(),
                               rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", ["gan-vector", "gan-map"])
def test_a_gan_refuses_guidance(name):
    generator = build(name)
    with pytest.raises(UserError, match="a GAN has no classifier-free guidance"):
        generator.check_request(torch.arange(N) % K, 2, 1.0)
    with pytest.raises(ValueError, match="guidance"):
        draw(generator, guidance=1.0)


def save_tokenizer(directory, discrete: bool) -> str:
    """A tiny untrained 8x8 grey-image tokenizer whose latent is LATENT, or for `discrete` whose
    token grid is GRID over V codes."""
    bottleneck = VQConfig(codebook_size=V) if discrete else IdentityConfig()
    cfg = TokenizerConfig(latent_channels=2, arch=ConvConfig(channels=8, ch_mult=(1, 2)),
                          bottleneck=bottleneck)
    torch.manual_seed(0)
    Tokenizer(cfg, 1).save(directory)
    return str(directory)


@names
def test_samples_in_the_public_format(name, tmp_path):
    what = CASES[name].what
    tokenizer = "" if what.shape == VECTOR or what.kind == "pixels" else save_tokenizer(
        tmp_path / "tok", what.kind == "indices")
    build(name, tokenizer=tokenizer).save(tmp_path / "gen")
    done = sample_to_file(tmp_path / "gen", N, tmp_path / "s.npz", seed=0)
    assert done["steps"] == 2  # the generator's own default
    with np.load(tmp_path / "s.npz") as f:
        assert f["labels"].dtype == np.int64 and f["labels"].tolist() == [0, 1, 2, 0, 1]
        if what.shape == VECTOR:
            assert "images" not in f
            assert f["vectors"].dtype == np.float32 and f["vectors"].shape == (N, *VECTOR)
        else:
            assert "vectors" not in f
            assert f["images"].dtype == np.uint8 and f["images"].shape == (N, 8, 8, 1)
