"""Rate-distortion tools: BD-rate against analytic answers, payload parsers on real files."""

from __future__ import annotations

import math

import numpy as np
import pytest

from latentlab.codec.rd import (
    RDPoint,
    available_formats,
    bd_rate,
    monotone,
    payload_bytes,
    pillow_round_trip,
    quality,
)


def curve(scale: float, psnrs=(25.0, 30.0, 35.0, 40.0)) -> list[RDPoint]:
    """rate = scale * 2^(PSNR / 6): a codec that halves its rate for every 6 dB less."""
    return [RDPoint(scale * 2 ** (p / 6), p, 0.9) for p in psnrs]


@pytest.mark.parametrize("scale", [0.5, 0.8, 1.0, 1.7])
def test_bd_rate_of_a_scaled_curve_is_the_scale(scale):
    assert bd_rate(curve(1.0), curve(scale)) == pytest.approx((scale - 1) * 100, abs=1e-9)


def test_bd_rate_uses_only_the_overlap_and_refuses_disjoint_curves():
    # test curve covers 30..50 dB, anchor 25..40: only 30..40 counts, where the ratio is 0.5
    shifted = curve(0.5, psnrs=(30.0, 35.0, 40.0, 45.0, 50.0))
    assert bd_rate(curve(1.0), shifted) == pytest.approx(-50.0, abs=1e-9)
    assert math.isnan(bd_rate(curve(1.0, (20.0, 22.0)), curve(1.0, (30.0, 32.0))))
    assert math.isnan(bd_rate(curve(1.0), curve(1.0, (30.0,))))


def test_monotone_drops_dominated_points():
    points = [RDPoint(1.0, 30, 0), RDPoint(0.8, 31, 0), RDPoint(2.0, 29, 0), RDPoint(3.0, 35, 0)]
    assert [(p.bpp, p.psnr) for p in monotone(points)] == [(0.8, 31), (3.0, 35)]


@pytest.mark.parametrize("fmt", available_formats())
@pytest.mark.parametrize("channels", [1, 3])
def test_pillow_codecs_round_trip_and_their_payload_is_part_of_the_file(fmt, channels):
    rng = np.random.default_rng(0)
    image = (rng.random((16, 16, channels)) * 64 + np.arange(16)[:, None, None] * 8).astype(
        np.uint8)
    low, decoded_low = pillow_round_trip(image, fmt, 10)
    high, decoded_high = pillow_round_trip(image, fmt, 95)
    assert decoded_low.shape == image.shape and decoded_low.dtype == np.uint8
    payload = payload_bytes(fmt, low)
    assert 0 < payload <= len(low) and (payload < len(low) or fmt == "JXL")  # JXL: bare stream
    assert payload_bytes(fmt, high) > payload_bytes(fmt, low)
    assert quality([image], [decoded_high])[0] > quality([image], [decoded_low])[0]


def test_quality_caps_exact_images():
    image = np.zeros((8, 8, 1), np.uint8)
    psnr, ssim = quality([image], [image])
    assert psnr == 60.0 and ssim == pytest.approx(1.0)
