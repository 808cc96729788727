"""`latentlab train-tokenizer` and `encode`: train a decomposer (see `latentlab.recipes.train`),
and encode a dataset through it into a latent cache (see `latentlab.generation.encode`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from latentlab import config as C
from latentlab.commands import options
from latentlab.commands.common import (
    config_parser,
    configured,
    given_config,
    run_mode,
    run_options,
)
from latentlab.errors import UserError


def cmd_train_tokenizer(args: argparse.Namespace) -> int:
    from latentlab.recipes.presets import TOKENIZER_PRESETS
    from latentlab.recipes.train import TokenizerRunConfig, train_tokenizer

    mode = None if args.help or args.help_all else run_mode(args)
    overrides = options.overrides_from(args)
    cfg = given_config(args, TokenizerRunConfig, overrides) or C.from_dict(
        TokenizerRunConfig, C.apply_overrides(C.to_dict(TOKENIZER_PRESETS[args.preset]),
                                              overrides))
    if configured(args, cfg):
        return 0
    from latentlab.evaluation.perceptual import resolve_perceptual

    metrics = train_tokenizer(resolve_perceptual(cfg), args.out, mode)
    _print_summary(metrics)
    return 0


def _print_summary(metrics: dict) -> None:
    test = metrics.get("test", {})
    parts = [f"{k} {v:.4g}" for k, v in test.items()]
    print("test: " + ", ".join(parts) + f" (mean-image MSE {metrics['mean_image_mse']:.4g})")


def cmd_encode(args: argparse.Namespace) -> int:
    from latentlab.data import load_dataset
    from latentlab.generation.encode import (
        default_cache_path,
        encode_dataset,
        load_tokenizer,
        source_record,
    )

    out = Path(args.out) if args.out else default_cache_path(args.tokenizer, args.data,
                                                               args.split)
    data = load_dataset(args.data, args.split)
    try:
        tokenizer = load_tokenizer(args.tokenizer, args.data)
        path = encode_dataset(tokenizer, data, out, source_record(args.tokenizer, tokenizer),
                              overwrite=args.overwrite)
    except ValueError as e:
        raise UserError(str(e)) from None
    print(f"wrote {path} ({len(data)} items)")
    return 0


def register(sub) -> None:
    from latentlab.recipes.presets import TOKENIZER_PRESETS
    from latentlab.recipes.train import TokenizerRunConfig

    p = config_parser(sub, "train-tokenizer", "train a decomposer (tokenizer)",
                      description="Train a decomposer. Settings come from the preset, then "
                                  "--config FILE.yaml, then the dotted options below; --help "
                                  "lists those that act in the chosen configuration.")
    p.add_argument("--config", help="YAML config file (see configs/)")
    p.add_argument("--preset", default="digits-kl", choices=sorted(TOKENIZER_PRESETS),
                   metavar="NAME", help="built-in configuration used when no --config is "
                   "given, DATASET-BOTTLENECK as configs/NAME.yaml (default: digits-kl)")
    run_options(p)
    options.add_arguments(p, TokenizerRunConfig)
    p.set_defaults(func=cmd_train_tokenizer)

    p = sub.add_parser("encode", help="encode a dataset through a tokenizer into a latent cache",
                       description="Encode one split of a dataset through a trained tokenizer "
                                   "into a latent cache (safetensors shards, memory-mapped).")
    p.add_argument("--tokenizer", required=True, help="run directory of a trained tokenizer")
    p.add_argument("--data", required=True, help="dataset spec, e.g. digits")
    p.add_argument("--split", default="train", choices=["train", "test"])
    p.add_argument("--out", help="cache directory (default: TOKENIZER/caches/SPEC-SPLIT)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing cache")
    p.set_defaults(func=cmd_encode)
