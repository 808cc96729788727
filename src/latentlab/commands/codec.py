"""`latentlab train-codec`, `compress` and `decompress`: the codec (see `latentlab.codec`)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from latentlab.commands import options
from latentlab.commands.common import given_config, run_mode, run_options
from latentlab.errors import UserError

POLICY = ("Images of any size are coded as tiles of the tokenizer's training resolution: each "
          "image is padded at the bottom and right by repeating its edge pixels to whole tiles, "
          "its size and tile grid are recorded in the file, and decompress crops it back. "
          "Channels: a grey image given to an RGB model is repeated into 3 channels; a colour "
          "image given to a grey model is refused unless its channels are equal; an alpha "
          "channel must be fully opaque and is dropped.")


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="RUN", help="a codec run made by train-codec")
    p.add_argument("--tokenizer", metavar="RUN", help="instead of --model: a tokenizer run "
                   "(discrete bottleneck) ...")
    p.add_argument("--prior", metavar="RUN", help="... and an autoregressive generator run "
                   "(family ar or pixelcnn) "
                   "trained on its tokens")


def _load_model(args: argparse.Namespace):
    from latentlab.codec import CodecModel

    if args.model and (args.tokenizer or args.prior):
        raise UserError("give --model, or --tokenizer and --prior, not both")
    if not args.model and not (args.tokenizer and args.prior):
        raise UserError("the codec needs its model: --model RUN, or --tokenizer RUN and "
                        "--prior RUN")
    if args.model:
        return CodecModel.load(args.model)
    return CodecModel.load(tokenizer=args.tokenizer, prior=args.prior)


def cmd_train_codec(args: argparse.Namespace) -> int:
    from latentlab import config as C
    from latentlab.codec.train import CodecRunConfig, PriorConfig, train_codec
    from latentlab.recipes.presets import TOKENIZER_PRESETS

    mode = run_mode(args)
    overrides = options.overrides_from(args)
    cfg = given_config(args, CodecRunConfig, overrides)
    if cfg is None:
        base = {"tokenizer": C.to_dict(TOKENIZER_PRESETS[args.preset]),
                "prior": C.to_dict(PriorConfig())}
        cfg = C.from_dict(CodecRunConfig, C.apply_overrides(base, overrides))
    from latentlab.evaluation.perceptual import resolve_perceptual

    cfg = dataclasses.replace(cfg, tokenizer=resolve_perceptual(cfg.tokenizer))
    metrics = train_codec(cfg, args.out, mode)
    tok = metrics["tokenizer"]
    print(f"codec {metrics['fingerprint']}: tokenizer PSNR {tok.get('psnr', float('nan')):.2f} "
          f"dB, prior {metrics['prior']['bits_per_token']:.3f} bits/token, about "
          f"{metrics['estimated_bpp']:.3f} bits per pixel on the test split")
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    from latentlab.codec import compress
    from latentlab.codec.images import names_for, read_image
    from latentlab.io import atomic_path

    if args.chunk < 1:
        raise UserError(f"--chunk must be >= 1, got {args.chunk}")
    model = _load_model(args)
    images = [read_image(path, model.channels) for path in args.images]
    encoded = compress(model, images, names_for(args.images), chunk=args.chunk)
    with atomic_path(Path(args.output)) as tmp:
        tmp.write_bytes(encoded.data)
    pixels = sum(im.shape[0] * im.shape[1] for im in images)
    print(f"wrote {args.output}: {len(images)} images, {len(encoded.data)} bytes "
          f"({8 * len(encoded.data) / pixels:.3f} bits per pixel; payload "
          f"{encoded.payload_bytes} bytes, -log2 P = {encoded.bits / 8:.1f} bytes)")
    return 0


def cmd_decompress(args: argparse.Namespace) -> int:
    from latentlab.codec import CodecError, decompress
    from latentlab.codec.images import output_name, write_png

    path = Path(args.file)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror or e})") from None
    model = _load_model(args)
    decoded = decompress(model, data, where=str(path))  # everything decoded before any write
    out = Path(args.output)
    targets = [out / output_name(name, i) for i, name in enumerate(decoded.names)]
    if len(set(targets)) != len(targets):
        raise CodecError(f"{path}: invalid header: two images have the same name")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    existing = [t for t in targets if t.exists()]
    if existing and not args.overwrite:
        raise UserError(f"{existing[0]}: exists; pass --overwrite to replace it")
    for target, image in zip(targets, decoded.images, strict=True):
        write_png(target, image)
    print(f"wrote {len(targets)} images to {out}")
    return 0


def register(sub) -> None:
    from latentlab.codec.train import CODEC_PRESETS, CodecRunConfig

    p = sub.add_parser(
        "train-codec", help="train a codec: a discrete tokenizer, then a prior on its tokens",
        description="Train a discrete tokenizer (from --preset, then --config, then the dotted "
                    "options), then an unconditional autoregressive prior on its tokens of the "
                    "same dataset, into one codec run for compress and decompress.")
    p.add_argument("--config", help="YAML file of a CodecRunConfig (tokenizer: ..., prior: ...)")
    p.add_argument("--preset", default="digits-vq", choices=CODEC_PRESETS, metavar="NAME",
                   help=f"tokenizer preset: {', '.join(CODEC_PRESETS)} (default: digits-vq)")
    run_options(p)
    options.add_arguments(p, CodecRunConfig)
    p.set_defaults(func=cmd_train_codec)

    p = sub.add_parser("compress", help="compress images into one codec file",
                       description="Compress image files (PNG, JPEG, ...) into one file with a "
                                   "codec model: tokens range-coded with the prior's "
                                   "probabilities. " + POLICY)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="file to write")
    _model_options(p)
    p.add_argument("--chunk", type=int, default=64, help="tiles per batch of the prior; the "
                   "file records it and decoding batches alike (default: 64)")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("decompress", help="decompress a codec file into PNG images",
                       description="Decode a file made by compress, with the same model, into "
                                   "PNG files in DIR named as the originals (their stems, "
                                   "sanitised). A foreign, truncated or damaged file, or one "
                                   "made by another model, is refused with one line. " + POLICY)
    p.add_argument("file", metavar="FILE", help="a file made by latentlab compress")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory for the PNGs")
    _model_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing PNGs in DIR")
    p.set_defaults(func=cmd_decompress)
