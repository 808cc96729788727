"""Rate-distortion of latentlab's codec against JPEG, WebP, AVIF and JPEG XL on the built-in
digits and shapes test splits, and the codec's speed.

    python benchmarks/codec_rd.py [--quick] [--runs DIR] [--threads N] [--plot FILE]

1. Codec runs (`latentlab train-codec`: a VQ tokenizer, then an unconditional autoregressive
   prior on its tokens) at several codebook sizes K and token grids, `VARIANTS`: on digits
   (8x8 grey) K16 and K128 on 4x4 tokens, K16 and K64 on 8x8; on shapes (32x32 RGB) K64 and
   K1024 on 8x8 tokens, K1024 on 4x4. Each is trained into RUNS/<dataset>-<variant> unless a
   finished run is already there, so a second invocation (or `--runs` of pre-trained runs)
   only measures. The default budget (`FULL`: 600 tokenizer and 600 prior steps per run) trains
   7 runs in about 20 minutes on a busy 2-core machine (other processes taking 50-60 % of it);
   measuring alone then takes about 2.5 minutes. The figures are those of small models trained
   for minutes, not the codec's ceiling.
2. Each codec codes the test images (all 360 digits, the first 300 shapes) three ways: one file
   per image (header included: `bpp_file`), all images in one file sharing one header
   (`bpp_batch`), and the range coder's output alone (`bpp_payload`); PSNR (per image, capped
   at 60 dB, averaged) and SSIM of the decoded images against the originals.
3. Pillow's JPEG, WebP, AVIF and (with `pillow-jxl-plugin`) JPEG XL code every test image as a
   file of its own at each quality of `QUALITIES`: real file sizes (`file`) and their entropy-
   coded data alone (`payload`, see `latentlab.codec.rd`).
4. Bjøntegaard delta-rate (PCHIP of log-rate against PSNR over the common PSNR interval) of the
   codec against each baseline: per-image files against files, the shared-header batch file
   against files, payload against payload. Negative: the codec needs fewer bits at equal PSNR.
   NaN where the curves do not overlap in PSNR. A rate-distortion plot goes to `--plot`.
5. Speed: images per second through `compress` and `decompress` of the batch file (prior on one
   thread, as the codec always runs it).

Training here runs on `--threads` threads, 1 by default: these networks are so small that a
second thread gains little, and on a shared 2-core machine OpenMP's spin-waiting made two
threads 10-30x slower than one (measured: the AR prior's step, 0.14 s on one thread, 4 s on
two, with other processes busy). `other_load` is the share of the CPUs other processes used.

Legend: K codebook size, N images, bpp bits per pixel.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from common import Figure, OtherLoad, machine_description, print_figures

from latentlab import config as C
from latentlab import pixels
from latentlab.codec import CodecModel, compress, decompress
from latentlab.codec.model import MANIFEST
from latentlab.codec.rd import (
    RDPoint,
    available_formats,
    bd_rate,
    payload_bytes,
    pillow_round_trip,
    quality,
)
from latentlab.codec.train import CodecRunConfig, PriorConfig, train_codec
from latentlab.data import load_dataset
from latentlab.recipes.presets import TOKENIZER_PRESETS

QUALITIES = (0, 1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)
"""Pillow's quality settings tried (0 is each codec's lowest; JPEG treats it as 1)."""
QUICK_QUALITIES = (0, 30, 60, 90)


@dataclass(frozen=True)
class Variant:
    """One codec run: a tokenizer preset and dotted overrides of its `CodecRunConfig`."""

    name: str
    preset: str
    overrides: dict


DIGITS_PRIOR = {"prior.train.batch_size": 64}
SHAPES_PRIOR = {"prior.train.batch_size": 32, "prior.transformer.width": 96,
                "prior.transformer.depth": 3}
VARIANTS = {
    "digits": (
        Variant("K16-4x4", "digits-vq", {"tokenizer.model.bottleneck.codebook_size": 16}),
        Variant("K128-4x4", "digits-vq", {}),
        Variant("K16-8x8", "digits-vq", {"tokenizer.model.arch.ch_mult": [1],
                                         "tokenizer.model.bottleneck.codebook_size": 16}),
        Variant("K64-8x8", "digits-vq", {"tokenizer.model.arch.ch_mult": [1],
                                         "tokenizer.model.bottleneck.codebook_size": 64}),
    ),
    "shapes": (
        Variant("K64-8x8", "shapes32-vq", {"tokenizer.model.bottleneck.codebook_size": 64}),
        Variant("K1024-8x8", "shapes32-vq", {}),
        Variant("K1024-4x4", "shapes32-vq", {"tokenizer.model.arch.ch_mult": [1, 2, 2, 2]}),
    ),
}
PRIOR_OVERRIDES = {"digits": DIGITS_PRIOR, "shapes": SHAPES_PRIOR}


@dataclass(frozen=True)
class Settings:
    """How much to train and measure: `FULL` for the figures, `QUICK` for a smoke run."""

    tokenizer_steps: int
    prior_steps: int
    images: dict
    """Test images coded per dataset (the first ones of the split)."""
    qualities: tuple[int, ...]
    variants: dict


FULL = Settings(600, 600, {"digits": 360, "shapes": 300}, QUALITIES, VARIANTS)
QUICK = Settings(30, 30, {"digits": 40, "shapes": 20}, QUICK_QUALITIES,
                 {d: v[:2] for d, v in VARIANTS.items()})


def codec_config(dataset: str, variant: Variant, s: Settings) -> CodecRunConfig:
    base = {"tokenizer": C.to_dict(TOKENIZER_PRESETS[variant.preset]),
            "prior": C.to_dict(PriorConfig())}
    steps = {"tokenizer.train.steps": s.tokenizer_steps, "prior.train.steps": s.prior_steps,
             "tokenizer.train.eval_every": 0, "prior.train.eval_every": 0,
             "tokenizer.train.checkpoint_every": s.tokenizer_steps,
             "prior.train.checkpoint_every": s.prior_steps}
    for key, value in (steps | PRIOR_OVERRIDES[dataset] | variant.overrides).items():
        C.set_dotted(base, key, value)
    return C.from_dict(CodecRunConfig, base)


def codec_model(dataset: str, variant: Variant, s: Settings, runs: Path) -> CodecModel:
    """The codec run of a variant, trained first unless a finished one is there."""
    run = runs / f"{dataset}-{variant.name}"
    if not (run / MANIFEST).exists():
        start = time.perf_counter()
        mode = "overwrite" if run.exists() else "new"
        train_codec(codec_config(dataset, variant, s), run, mode)
        print(f"trained {run} in {time.perf_counter() - start:.0f} s")
    return CodecModel.load(run)


def test_images(dataset: str, n: int) -> list[np.ndarray]:
    """The first n test images, (H, W, C) uint8, in the codec's pixel convention."""
    spec = TOKENIZER_PRESETS[VARIANTS[dataset][0].preset].data.spec
    data = load_dataset(spec, "test")
    x = data.__getitems__(list(range(min(n, len(data))))).x
    return list(pixels.to_hwc_uint8(x))


@dataclass(frozen=True)
class CodecResult:
    file: RDPoint
    batch: RDPoint
    payload: RDPoint
    encode_per_s: float
    decode_per_s: float


def measure_codec(model: CodecModel, images: list[np.ndarray], label: str) -> CodecResult:
    pixels_total = sum(im.shape[0] * im.shape[1] for im in images)
    start = time.perf_counter()
    encoded = compress(model, images)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    decoded = decompress(model, encoded.data)
    decode_s = time.perf_counter() - start
    assert torch.equal(decoded.tokens, encoded.tokens), "the codec did not round-trip"
    psnr, ssim = quality(images, decoded.images)
    singles = sum(len(compress(model, [im]).data) for im in images)
    return CodecResult(RDPoint(8 * singles / pixels_total, psnr, ssim, label),
                       RDPoint(8 * len(encoded.data) / pixels_total, psnr, ssim, label),
                       RDPoint(8 * encoded.payload_bytes / pixels_total, psnr, ssim, label),
                       len(images) / encode_s, len(images) / decode_s)


def measure_baseline(fmt: str, images: list[np.ndarray],
                     qualities: tuple[int, ...]) -> tuple[list[RDPoint], list[RDPoint]]:
    """(file points, payload points) of a Pillow codec, one per quality."""
    pixels_total = sum(im.shape[0] * im.shape[1] for im in images)
    files, payloads = [], []
    for q in qualities:
        coded = [pillow_round_trip(im, fmt, q) for im in images]
        psnr, ssim = quality(images, [out for _, out in coded])
        size = sum(len(data) for data, _ in coded)
        payload = sum(payload_bytes(fmt, data) for data, _ in coded)
        files.append(RDPoint(8 * size / pixels_total, psnr, ssim, f"q{q}"))
        payloads.append(RDPoint(8 * payload / pixels_total, psnr, ssim, f"q{q}"))
    return files, payloads


def plot(results: dict, baselines: dict, path: Path) -> None:
    """bpp against PSNR (top) and SSIM (bottom), one column per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    datasets = list(results)
    fig, axes = plt.subplots(2, len(datasets), figsize=(6 * len(datasets), 9), squeeze=False)
    for col, dataset in enumerate(datasets):
        for row, metric in enumerate(("psnr", "ssim")):
            ax = axes[row][col]
            for i, (fmt, (files, payloads)) in enumerate(baselines[dataset].items()):
                colour = f"C{i}"
                ax.plot([p.bpp for p in files], [getattr(p, metric) for p in files], "-",
                        color=colour, label=f"{fmt} file")
                ax.plot([p.bpp for p in payloads], [getattr(p, metric) for p in payloads], ":",
                        color=colour, label=f"{fmt} payload")
            ours = sorted(results[dataset].values(), key=lambda r: r.file.psnr)
            for kind, style in (("file", "o-"), ("batch", "s--"), ("payload", "^:")):
                points = [getattr(r, kind) for r in ours]
                ax.plot([p.bpp for p in points], [getattr(p, metric) for p in points], style,
                        color="black", label=f"latentlab {kind}")
            for r in ours:
                ax.annotate(r.file.label, (r.batch.bpp, getattr(r.batch, metric)), fontsize=7)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel("bits per pixel")
            ax.set_ylabel("PSNR (dB)" if metric == "psnr" else "SSIM")
            ax.set_title(f"{dataset} test split")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def bd_figures(dataset: str, ours: dict, baselines: dict) -> list[Figure]:
    figures = []
    for fmt, (files, payloads) in baselines.items():
        for kind, anchor in (("file", files), ("batch", files), ("payload", payloads)):
            test = [getattr(r, kind) for r in ours.values()]
            figures.append(Figure(f"{dataset}_bd_rate_vs_{fmt.lower()}_{kind}",
                                  bd_rate(anchor, test), "%"))
    return figures


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny training, few "
                        "images and qualities; figures are meaningless")
    parser.add_argument("--runs", default="runs/codec_rd", help="directory of the codec runs: "
                        "finished runs there are reused, missing ones trained (default: "
                        "runs/codec_rd, runs/codec_rd_quick with --quick)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--plot", help="rate-distortion plot (default: RUNS/rd.png)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    print(machine_description())
    logging.basicConfig(level=logging.WARNING)
    s = QUICK if args.quick else FULL
    runs = Path(args.runs + ("_quick" if args.quick and args.runs == "runs/codec_rd" else ""))
    formats = available_formats()
    results, baselines = {}, {}
    with OtherLoad() as load:
        for dataset, variants in s.variants.items():
            images = test_images(dataset, s.images[dataset])
            results[dataset] = {v.name: measure_codec(codec_model(dataset, v, s, runs), images,
                                                      v.name) for v in variants}
            baselines[dataset] = {fmt: measure_baseline(fmt, images, s.qualities)
                                  for fmt in formats}
    plot_path = Path(args.plot) if args.plot else runs / "rd.png"
    plot(results, baselines, plot_path)

    for dataset in results:
        print(f"{dataset}: {s.images[dataset]} test images; bpp file / batch / payload, PSNR, "
              "SSIM")
        for name, r in results[dataset].items():
            print(f"  latentlab {name:>10}: {r.file.bpp:7.3f} {r.batch.bpp:7.3f} "
                  f"{r.payload.bpp:7.3f}  {r.file.psnr:6.2f} dB  {r.file.ssim:.4f}")
        for fmt, (files, payloads) in baselines[dataset].items():
            for f, p in zip(files, payloads, strict=True):
                print(f"  {fmt:>4} {f.label:>14}: {f.bpp:7.3f}    -    {p.bpp:7.3f}  "
                      f"{f.psnr:6.2f} dB  {f.ssim:.4f}")
    print(f"wrote {plot_path}; training {s.tokenizer_steps} tokenizer and {s.prior_steps} "
          f"prior steps per run, runs in {runs}")

    figures = []
    for dataset, ours in results.items():
        for name, r in ours.items():
            key = f"{dataset}_{name}"
            figures += [Figure(f"{key}_bpp_file", r.file.bpp, "bpp"),
                        Figure(f"{key}_bpp_batch", r.batch.bpp, "bpp"),
                        Figure(f"{key}_bpp_payload", r.payload.bpp, "bpp"),
                        Figure(f"{key}_psnr", r.file.psnr, "dB"),
                        Figure(f"{key}_ssim", r.file.ssim, ""),
                        Figure(f"{key}_encode", r.encode_per_s, "images/s"),
                        Figure(f"{key}_decode", r.decode_per_s, "images/s")]
        figures += bd_figures(dataset, ours, baselines[dataset])
    figures.append(Figure("other_load", 100 * load.fraction if math.isfinite(load.fraction)
                          else math.nan, "%"))
    print_figures(figures)


if __name__ == "__main__":
    main()
