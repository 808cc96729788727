"""The plain convolutional autoencoder: shapes, and that it really learns digits."""

from __future__ import annotations

import pytest
import torch

from latentlab.recipes.train import train_tokenizer
from latentlab.tokenizers.autoencoder import Autoencoder, AutoencoderConfig


@pytest.mark.parametrize("ch_mult, size", [((1,), 8), ((1, 2), 8), ((1, 2, 2), 16),
                                           ((1, 1, 2, 2), 32)])
def test_shapes_follow_the_downsampling_factor(ch_mult, size):
    cfg = AutoencoderConfig(in_channels=3, channels=8, ch_mult=ch_mult, latent_channels=5)
    model = Autoencoder(cfg)
    x = torch.randn(2, 3, size, size)
    z = model.encode(x)
    f = 2 ** (len(ch_mult) - 1)
    assert z.shape == (2, 5, size // f, size // f)
    assert model.decode(z).shape == x.shape


def test_incompatible_image_size_names_the_field():
    model = Autoencoder(AutoencoderConfig(ch_mult=(1, 2, 2, 2)))
    with pytest.raises(ValueError, match="ch_mult: downsampling factor 8 does not divide .*12x12"):
        model.check_input((1, 12, 12))


@pytest.mark.slow
def test_beats_the_mean_image_on_held_out_digits(tmp_path, tiny_config):
    metrics = train_tokenizer(tiny_config(steps=300, batch_size=32, log_every=50), tmp_path / "r")
    # predicting the mean image leaves MSE ~0.30; a trained autoencoder must do far better
    assert metrics["test"]["mse"] < 0.2 * metrics["mean_image_mse"]
    assert metrics["test"]["psnr"] > 18
    assert (tmp_path / "r" / "samples" / "reconstructions.png").stat().st_size > 0
