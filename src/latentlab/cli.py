"""The `latentlab` command: argument parsing and subcommands, each a call to a plain function.

Every user error (a bad option, config value, dataset or checkpoint) prints one line and exits
with status 2, without a traceback. A diverged training run exits with status 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from latentlab import __version__
from latentlab import config as C
from latentlab.errors import TrainingDiverged, UserError
from latentlab.training.rundir import CONFIG


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _mode(args: argparse.Namespace) -> str:
    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite exclude each other")
    return "resume" if args.resume else "overwrite" if args.overwrite else "new"


def _run_options(p: argparse.ArgumentParser, default_out: str | None = None) -> None:
    p.add_argument("--out", required=default_out is None, default=default_out,
                   help="run directory to create" + (f" (default: {default_out})"
                                                     if default_out else ""))
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its latest checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the run in --out and start again")


def cmd_train_tokenizer(args: argparse.Namespace) -> int:
    from latentlab.recipes.presets import TOKENIZER_PRESETS
    from latentlab.recipes.train import TokenizerRunConfig, train_tokenizer

    mode = _mode(args)
    overrides = C.overrides_from(args)
    if args.config:
        cfg = C.load(TokenizerRunConfig, args.config, overrides)
    elif mode == "resume":  # continue with the run's own configuration
        stored = Path(args.out) / CONFIG
        if not stored.exists():
            raise UserError(f"{args.out}: no run to resume (no {CONFIG})")
        cfg = C.load(TokenizerRunConfig, stored, overrides)
    else:
        preset = TOKENIZER_PRESETS[args.preset]
        cfg = C.from_dict(TokenizerRunConfig, _merged(C.to_dict(preset), overrides))
    metrics = train_tokenizer(cfg, args.out, mode)
    _print_summary(metrics)
    return 0


def _merged(base: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        C.set_dotted(base, key, value)
    return base


def _print_summary(metrics: dict) -> None:
    test = metrics.get("test", {})
    parts = [f"{k} {v:.4g}" for k, v in test.items()]
    print("test: " + ", ".join(parts) + f" (mean-image MSE {metrics['mean_image_mse']:.4g})")


def cmd_train_generator(args: argparse.Namespace) -> int:
    from latentlab.generation.config import GeneratorRunConfig
    from latentlab.generation.train import train_generator

    mode = _mode(args)
    overrides = C.overrides_from(args)
    if not args.config and mode == "resume":
        stored = Path(args.out) / CONFIG
        if not stored.exists():
            raise UserError(f"{args.out}: no run to resume (no {CONFIG})")
        args.config = stored
    cfg = C.load(GeneratorRunConfig, args.config, overrides)
    metrics = train_generator(cfg, args.out, mode)
    print("test: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics["test"].items()))
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    from latentlab.data import load_dataset
    from latentlab.generation.encode import default_cache_path, encode_dataset, source_record
    from latentlab.tokenizers.tokenizer import Tokenizer

    tokenizer = Tokenizer.load(args.tokenizer)
    out = Path(args.out) if args.out else default_cache_path(args.tokenizer, args.data,
                                                               args.split)
    data = load_dataset(args.data, args.split)
    try:
        path = encode_dataset(tokenizer, data, out, source_record(args.tokenizer, tokenizer),
                              overwrite=args.overwrite)
    except ValueError as e:
        raise UserError(str(e)) from None
    print(f"wrote {path} ({len(data)} items)")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from latentlab.generation.sample import sample_to_file

    labels = None
    if args.labels:
        try:
            labels = [int(v) for v in args.labels.split(",")]
        except ValueError:
            raise UserError(f"--labels: expected comma-separated integers, got "
                            f"'{args.labels}'") from None
    done = sample_to_file(args.generator, args.n, args.out, labels=labels, steps=args.steps,
                          guidance=args.cfg, seed=args.seed, grid=args.grid,
                          sampler=args.sampler, layout=args.format)
    print(f"wrote {done['out']} ({done['n']} samples)" + (f" and {args.grid}" if args.grid
                                                          else ""))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from latentlab.study.demo import run_demo

    run_demo(args.out)
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    from latentlab.data.info import describe, format_description

    print(format_description(describe(args.spec, grid=args.grid)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from latentlab.generation.config import GeneratorRunConfig
    from latentlab.recipes.presets import TOKENIZER_PRESETS
    from latentlab.recipes.train import TokenizerRunConfig

    parser = Parser(prog="latentlab", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"latentlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("demo", help="the main job: the digits study of every recipe",
                       description="Run the demo study on the built-in handwritten digits: "
                                   "every recipe x 2 seeds (tokenizer, generator, samples, "
                                   "evaluation), then write report.html and print the "
                                   "headline comparison.")
    p.add_argument("--out", default="runs/demo", help="output directory, replaced if it holds "
                                                      "an earlier demo (default: runs/demo)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train-tokenizer", help="train a decomposer (tokenizer)",
                       description="Train a decomposer. Settings come from the preset, then "
                                   "--config FILE.yaml, then the dotted options below.")
    p.add_argument("--config", help="YAML config file (see configs/)")
    p.add_argument("--preset", default="digits-kl", choices=sorted(TOKENIZER_PRESETS),
                   metavar="NAME", help="built-in configuration used when no --config is "
                   f"given: {', '.join(TOKENIZER_PRESETS)} (default: digits-kl)")
    _run_options(p)
    C.add_arguments(p, TokenizerRunConfig)
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

    p = sub.add_parser("train-generator", help="train a generator on latents, pixels or vectors",
                       description="Train a generator. With --tokenizer it models that "
                                   "tokenizer's latent (cached beside it); without, the data.")
    p.add_argument("--config", help="YAML config file (see configs/generators/)")
    _run_options(p)
    C.add_arguments(p, GeneratorRunConfig)
    p.set_defaults(func=cmd_train_generator)

    p = sub.add_parser("sample", help="draw samples from a trained generator",
                       description="Sample a trained generator, decode through its tokenizer "
                                   "and write samples.npz: images uint8 (N, H, W, C), labels "
                                   "int64 (N,) (-1 for unconditional).")
    p.add_argument("--generator", required=True, help="run directory of a trained generator")
    p.add_argument("--n", type=int, default=100, help="number of samples (default: 100)")
    p.add_argument("--labels", help="comma-separated class labels, repeated to fill --n "
                                    "(default: 0, 1, ..., K-1, 0, ...)")
    p.add_argument("--steps", type=int, help="sampling steps (default: the run's)")
    p.add_argument("--sampler", default="", help="sampler name (default: the run's or the "
                                                 "process's)")
    p.add_argument("--cfg", type=float, help="classifier-free guidance scale (1: conditional, "
                                             "0: unconditional)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise (default: 0)")
    p.add_argument("--out", required=True, help="samples file to write (.npz)")
    p.add_argument("--format", default="latentlab", choices=("latentlab", "adm"),
                   help="latentlab: images + labels (the public format); adm: also arr_0 "
                        "uint8 (N, H, W, C) and arr_1 labels, the layout the ADM evaluation "
                        "suite reads (default: latentlab)")
    p.add_argument("--grid", help="also save a PNG grid of the first 100 samples")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("data", help="inspect datasets")
    data_sub = p.add_subparsers(dest="data_command", required=True, parser_class=Parser)
    q = data_sub.add_parser("info", help="validate every item of a dataset and summarise it",
                            description="Decode and check every item of both splits; print "
                                        "size, shape, value range and label histogram.")
    q.add_argument("spec", help="dataset spec, e.g. digits, shapes:size=32, folder:PATH")
    q.add_argument("--grid", help="also save a grid of examples to this PNG")
    q.set_defaults(func=cmd_data_info)

    for module in _command_modules():
        module.register(sub)
    return parser


def _command_modules():
    """The modules of `latentlab.commands`, each adding its own subcommands."""
    import importlib
    import pkgutil

    from latentlab import commands

    names = sorted(m.name for m in pkgutil.iter_modules(commands.__path__))
    return [importlib.import_module(f"latentlab.commands.{name}") for name in names]


def _setup_logging() -> None:
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(message)s", stream=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `latentlab` console script and `python -m latentlab`."""
    args = build_parser().parse_args(argv)
    _setup_logging()
    try:
        code = args.func(args)
    except UserError as e:
        print(f"latentlab: error: {e}", file=sys.stderr)
        code = 2
    except TrainingDiverged as e:
        print(f"latentlab: training diverged: {e}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    return _exit(code)


def _exit(code: int) -> int:
    """Leave cleanly; under torchrun, skip interpreter teardown, where gloo can abort."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        from latentlab.training.distributed import shutdown

        if code == 0:
            shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
