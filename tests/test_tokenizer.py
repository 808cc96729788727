"""The Tokenizer object: encode/decode, latent statistics, tiled decoding, save/load."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file, save_file

from latentlab import config as C
from latentlab.errors import CheckpointError
from latentlab.tokenizers.bottlenecks import BottleneckConfig, FSQConfig
from latentlab.tokenizers.conv import ConvConfig
from latentlab.tokenizers.mlp import MLPConfig
from latentlab.tokenizers.tokenizer import WEIGHTS, Tokenizer, TokenizerConfig

KINDS = ["identity", "kl", "vq", "lfq", "fsq"]
BOTTLENECK_CONFIGS = {C.kind_of(m): m for m in C.sections(BottleneckConfig)}


def config(kind: str, arch: str = "conv") -> TokenizerConfig:
    channels = 3 if kind == "fsq" else 4
    bottleneck = FSQConfig(levels=(5, 4, 3)) if kind == "fsq" else BOTTLENECK_CONFIGS[kind]()
    net = (ConvConfig(channels=8, ch_mult=(1, 2)) if arch == "conv"
           else MLPConfig(encoder_hidden=(16,), decoder_hidden=(16,)))
    return TokenizerConfig(arch=net, latent_channels=channels, bottleneck=bottleneck)


def tokenizer(kind: str, arch: str = "conv", cfg: TokenizerConfig | None = None) -> Tokenizer:
    """A tokenizer of 1-channel images (conv) or 10-feature vectors (mlp)."""
    return Tokenizer(cfg or config(kind, arch), 1 if arch == "conv" else 10)


def images(n=6, size=8):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip_gives_identical_outputs(tmp_path, kind):
    torch.manual_seed(0)
    model = tokenizer(kind)
    model.train()
    model(images())  # let stateful bottlenecks (k-means init, running statistics) move
    model.eval()
    model.fit_statistics([images()])
    model.save(tmp_path)
    loaded = Tokenizer.load(tmp_path)
    x = images()
    a, b = model(x), loaded(x)
    assert torch.equal(a.x_hat, b.x_hat) and torch.equal(a.bottleneck.latent, b.bottleneck.latent)
    assert torch.equal(model.latent_scale, loaded.latent_scale)
    assert load_file(tmp_path / WEIGHTS)  # a plain safetensors file


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("arch", ["conv", "mlp"])
def test_shapes_and_indices_decode_like_codes(kind, arch):
    torch.manual_seed(0)
    model = tokenizer(kind, arch).eval()
    x = images() if arch == "conv" else torch.randn(6, 10)
    out = model.encode(x)
    assert out.latent.shape == (6, *model.latent_shape(tuple(x.shape[1:])))
    assert model.decode(out.latent).shape == x.shape
    if model.discrete:
        assert out.indices.shape == (6, *out.latent.shape[2:])
        torch.testing.assert_close(model.decode(out.indices), model.decode(out.latent))


@pytest.mark.parametrize("kind", ["identity", "vq"])
def test_tiled_decoding_equals_whole_batch(kind):
    torch.manual_seed(0)
    model = tokenizer(kind).eval()
    latent = model.encode(images(n=10)).latent
    whole = model.decode(latent)
    tiled = model.decode(latent, batch_size=3)
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-6)


def test_statistics_normalise_latents_to_unit_scale():
    torch.manual_seed(0)
    model = tokenizer("identity").eval()
    x = images(n=64)
    model.fit_statistics(x.split(16))
    z = model.normalize(model.encode(x).latent)
    per_channel = z.movedim(1, -1).reshape(-1, z.shape[1])
    torch.testing.assert_close(per_channel.mean(0), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(per_channel.std(0, unbiased=False), torch.ones(4), atol=1e-3,
                               rtol=0)
    torch.testing.assert_close(model.denormalize(z), model.encode(x).latent, atol=1e-5, rtol=0)


def test_load_refuses_another_architecture(tmp_path):
    tokenizer("kl").save(tmp_path)
    wanted = dataclasses.replace(config("kl"), latent_channels=8)
    with pytest.raises(CheckpointError, match="latent_channels is 4 but 8 was requested"):
        Tokenizer.load(tmp_path, expect=wanted)
    # weights that do not fit the stored architecture are named, not silently loaded
    tensors = load_file(tmp_path / WEIGHTS)
    key = next(k for k in tensors if k.startswith("encoder") and k.endswith("weight"))
    tensors[key] = torch.zeros(1, 1)
    save_file(tensors, tmp_path / WEIGHTS)
    with pytest.raises(CheckpointError, match=f"'{key}' is \\(1, 1\\) there"):
        Tokenizer.load(tmp_path)
    (tmp_path / WEIGHTS).write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot be read"):
        Tokenizer.load(tmp_path)
    with pytest.raises(CheckpointError, match="not a trained tokenizer"):
        Tokenizer.load(tmp_path / "nowhere")


def test_input_checks_name_the_field():
    cfg = dataclasses.replace(config("kl"), arch=ConvConfig(ch_mult=(1, 2, 2)))
    model = tokenizer("kl", cfg=cfg)
    with pytest.raises(ValueError, match="arch.ch_mult: downsampling factor 4 .* 10x10"):
        model.check_input((1, 10, 10))
    with pytest.raises(ValueError, match="in_channels: the model takes 1, the data has 3"):
        model.check_input((3, 8, 8))
    with pytest.raises(ValueError, match="arch: 'conv' takes images"):
        model.check_input((10,))
