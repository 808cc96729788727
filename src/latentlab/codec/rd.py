"""Rate-distortion tools: standard codecs through Pillow, their payload sizes, quality of
decoded images, and the Bjøntegaard delta-rate between two rate-distortion curves.

Rates are bits per pixel (bpp). A *file* rate counts every byte of a real file, headers
included; a *payload* rate counts only the entropy-coded data: for JPEG the scan data (between
each SOS header and the next marker), for WebP the VP8 frame after its 10-byte uncompressed
header (or the whole VP8L chunk), for AVIF the `mdat` box's contents, for JPEG XL the bare
codestream (its own size header is a few bytes; Pillow's plugin writes no container), and for
latentlab's codec the range coder's output.

Legend: N images, H W height and width, C channels (1 or 3).
"""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from latentlab import pixels
from latentlab.metrics.reconstruction import reconstruction_metrics

PSNR_CAP = 60.0
"""dB given to an image decoded without error (PSNR would be infinite), before averaging."""
FORMATS = ("JPEG", "WEBP", "AVIF", "JXL")


@dataclass(frozen=True)
class RDPoint:
    """One operating point of a codec on a set of images (means over the images)."""

    bpp: float
    psnr: float
    ssim: float
    label: str = ""


def available_formats() -> list[str]:
    """FORMATS that this Pillow can write (JPEG XL needs the `pillow-jxl-plugin` package)."""
    from PIL import features

    found = ["JPEG"] + [f for f in ("WEBP", "AVIF") if features.check(f.lower())]
    try:
        import pillow_jxl  # noqa: F401 - registers the JXL format with Pillow
    except ImportError:
        return found
    return found + ["JXL"]


def pillow_round_trip(image: np.ndarray, fmt: str, quality: int) -> tuple[bytes, np.ndarray]:
    """Encode (H, W, C) uint8 with Pillow's `fmt` at `quality` (0..100); returns the file and
    the decoded image, with the same channels as the input."""
    pil = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image)
    buffer = io.BytesIO()
    pil.save(buffer, format=fmt, quality=quality)
    data = buffer.getvalue()
    with Image.open(io.BytesIO(data)) as decoded:
        out = np.asarray(decoded.convert("L" if image.shape[2] == 1 else "RGB"))
    return data, out[..., None] if out.ndim == 2 else out


def payload_bytes(fmt: str, data: bytes) -> int:
    """Bytes of entropy-coded data in a file of `fmt` (module docstring)."""
    if fmt == "JPEG":
        return _jpeg_scan_bytes(data)
    if fmt == "WEBP":
        return _riff_payload(data)
    if fmt == "AVIF":
        return _box_payload(data, b"mdat")
    if fmt == "JXL":
        return len(data) if data[:2] == b"\xff\x0a" else _box_payload(data, b"jxlc")
    raise ValueError(f"unknown format {fmt}")


def _jpeg_scan_bytes(data: bytes) -> int:
    """Sum of the entropy-coded segments that follow each SOS header."""
    pos, total = 2, 0  # after SOI
    while pos + 4 <= len(data):
        assert data[pos] == 0xFF, f"JPEG: no marker at byte {pos}"
        marker = data[pos + 1]
        if marker == 0xD9:  # EOI
            break
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        pos += 2 + length
        if marker == 0xDA:  # SOS: scan data runs to the next marker other than RSTn / FF00
            start = pos
            while pos + 1 < len(data) and not (
                    data[pos] == 0xFF and data[pos + 1] not in (0x00, *range(0xD0, 0xD8))):
                pos += 1
            total += pos - start
    return total


def _riff_payload(data: bytes) -> int:
    """A WebP file's VP8 frame data (without its 10-byte uncompressed header) or VP8L data."""
    pos = 12  # RIFF, size, WEBP
    while pos + 8 <= len(data):
        fourcc, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        if fourcc == b"VP8 ":
            return size - 10
        if fourcc == b"VP8L":
            return size
        pos += 8 + size + (size & 1)
    raise ValueError("WebP: no VP8 or VP8L chunk")


def _box_payload(data: bytes, kind: bytes) -> int:
    """The contents' size of the first top-level ISO-BMFF box of type `kind`."""
    pos = 0
    while pos + 8 <= len(data):
        size, box = struct.unpack(">I", data[pos:pos + 4])[0], data[pos + 4:pos + 8]
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[pos + 8:pos + 16])[0], 16
        elif size == 0:
            size = len(data) - pos
        if box == kind:
            return size - header
        pos += size
    raise ValueError(f"no {kind.decode()} box")


def quality(originals: Sequence[np.ndarray], decoded: Sequence[np.ndarray]) -> tuple[float, float]:
    """Mean PSNR (dB, each image capped at PSNR_CAP) and mean SSIM of decoded images, all of one
    size (H, W, C) uint8; SSIM needs sides >= 7 (NaN otherwise)."""
    def batch(images):
        return pixels.from_uint8(torch.from_numpy(np.stack(images))).permute(0, 3, 1, 2)

    m = reconstruction_metrics(batch(originals), batch(decoded))
    psnr = float(m["psnr"].clamp(max=PSNR_CAP).mean())
    return psnr, float(m["ssim"].mean()) if "ssim" in m else math.nan


def monotone(points: Sequence[RDPoint]) -> list[RDPoint]:
    """The points sorted by PSNR, keeping only those that cost more than every point of lower
    PSNR (a rate-distortion curve must rise; a dominated point is not on it)."""
    kept: list[RDPoint] = []
    for p in sorted(points, key=lambda p: (p.psnr, p.bpp)):
        if not math.isfinite(p.psnr) or (kept and p.psnr <= kept[-1].psnr):
            continue
        while kept and kept[-1].bpp >= p.bpp:
            kept.pop()  # a cheaper point of higher PSNR dominates it
        kept.append(p)
    return kept


def bd_rate(anchor: Sequence[RDPoint], test: Sequence[RDPoint]) -> float:
    """Bjøntegaard delta-rate of `test` against `anchor`, in percent (negative: `test` needs
    fewer bits at equal PSNR), over the PSNR interval both curves cover.

    Each curve's log-rate is interpolated as a function of PSNR with a monotone cubic (PCHIP,
    as the piecewise-cubic variant of VCEG-AL22 does) and integrated over the overlap; the mean
    log-rate difference d gives 10^d - 1. NaN when a curve has fewer than two points or the
    curves do not overlap in PSNR.
    """
    from scipy.interpolate import PchipInterpolator

    a, t = monotone(anchor), monotone(test)
    if len(a) < 2 or len(t) < 2:
        return math.nan
    lo, hi = max(a[0].psnr, t[0].psnr), min(a[-1].psnr, t[-1].psnr)
    if not hi > lo:
        return math.nan

    def mean_log_rate(points: list[RDPoint]) -> float:
        f = PchipInterpolator([p.psnr for p in points], [math.log10(p.bpp) for p in points])
        return float(f.integrate(lo, hi)) / (hi - lo)

    return (10 ** (mean_log_rate(t) - mean_log_rate(a)) - 1) * 100
