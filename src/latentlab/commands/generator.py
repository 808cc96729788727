"""`latentlab train-generator` and `sample`: train a generator on a tokenizer's latent, pixels
or vectors (see `latentlab.generation.train`), and draw samples from it (see
`latentlab.generation.sample`)."""

from __future__ import annotations

import argparse

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


def cmd_train_generator(args: argparse.Namespace) -> int:
    from latentlab.generation.config import GeneratorRunConfig
    from latentlab.generation.train import train_generator

    mode = None if args.help or args.help_all else run_mode(args)
    overrides = options.overrides_from(args)
    cfg = (given_config(args, GeneratorRunConfig, overrides)
           or C.load(GeneratorRunConfig, None, overrides))
    if configured(args, cfg):
        return 0
    metrics = train_generator(cfg, args.out, mode)
    print("test: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics["test"].items()))
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
    if args.prompt is not None and args.prompts:
        raise UserError("--prompt and --prompts: give one of them")
    prompts = [args.prompt] if args.prompt is not None else None
    if args.prompts:
        prompts = read_prompts(args.prompts)
    if prompts is not None and labels is not None:
        raise UserError("--labels and --prompt: a generator takes one kind of condition")
    if (args.generator is None) == (args.tokenizer is None) or bool(args.tokenizer) != args.prior:
        raise UserError("give --generator RUN, or --tokenizer RUN --prior (a VAE's own sampler)")
    if args.prior:
        from latentlab.generation.sample import prior_samples_to_file

        if labels or prompts or args.steps or args.cfg is not None or args.sampler or args.tol:
            raise UserError("--prior: a VAE's prior takes no labels, prompts, steps, --cfg, "
                            "--sampler or --tol")
        done = prior_samples_to_file(args.tokenizer, args.n, args.out, args.data or "",
                                     args.seed, args.grid, args.format)
        print(f"wrote {done['out']} ({done['n']} samples)")
        return 0
    if args.data:
        raise UserError("--data: only with --prior (a generator samples for its own data)")
    done = sample_to_file(args.generator, args.n, args.out, labels=labels, steps=args.steps,
                          guidance=args.cfg, seed=args.seed, grid=args.grid,
                          sampler=args.sampler, layout=args.format, prompts=prompts,
                          tol=args.tol)
    print(f"wrote {done['out']} ({done['n']} samples)" + (f" and {args.grid}" if args.grid
                                                          else ""))
    return 0


def read_prompts(path: str) -> list[str]:
    """The non-blank lines of a prompts file; UserError naming the file when it has none or
    cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            prompts = [line.strip() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--prompts {path}: cannot be read ({e})") from None
    if not prompts:
        raise UserError(f"--prompts {path}: no prompts in the file (one per line)")
    return prompts


EXAMPLES = """examples:
  latentlab sample --generator gen --n 16 --prompt "a red circle at the top left" --grid g.png
  latentlab sample --generator gen --n 64 --prompts prompts.txt --cfg 3 --out s.npz
  latentlab sample --generator gen --labels 3,7 --n 20 --out s.npz
  latentlab sample --tokenizer runs/kl --prior --n 1000 --out prior.npz"""


def register(sub) -> None:
    from latentlab.generation.config import GeneratorRunConfig

    p = config_parser(sub, "train-generator", "train a generator on latents, pixels or vectors",
                      description="Train a generator. With --tokenizer it models that "
                                  "tokenizer's latent (cached beside it); without, the data. "
                                  "--help lists the options that act in the chosen "
                                  "configuration.")
    p.add_argument("--config", help="YAML config file (see configs/generators/)")
    run_options(p)
    options.add_arguments(p, GeneratorRunConfig)
    p.set_defaults(func=cmd_train_generator)

    p = sub.add_parser("sample", help="draw samples from a trained generator",
                       description="Sample a trained generator, decode through its tokenizer "
                                   "and write samples.npz: images uint8 (N, H, W, C), labels "
                                   "int64 (N,) (-1 for unconditional or text), and for a "
                                   "text-conditioned generator prompts (N,) unicode.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", help="run directory of a trained generator")
    p.add_argument("--tokenizer", help="with --prior: a VAE (kl) tokenizer run to sample")
    p.add_argument("--prior", action="store_true",
                   help="decode N(0, I) draws of the --tokenizer's latent (the VAE's own "
                        "sampler, the baseline a latent generator improves on)")
    p.add_argument("--data", help="with --prior: the dataset whose image size sets the latent "
                                  "shape (default: the run's)")
    p.add_argument("--n", type=int, default=100, help="number of samples (default: 100)")
    p.add_argument("--labels", help="comma-separated class labels, repeated to fill --n "
                                    "(default: 0, 1, ..., K-1, 0, ...)")
    p.add_argument("--prompt", help="a prompt for a text-conditioned generator (every sample; "
                                    "default: the test split's captions in order)")
    p.add_argument("--prompts", help="a file of prompts, one per line, repeated to fill --n")
    p.add_argument("--steps", type=int, help="sampling steps (default: the run's)")
    p.add_argument("--sampler", default="", help="sampler name (default: the run's or the "
                                                 "process's)")
    p.add_argument("--tol", type=float, help="relative and absolute tolerance of the adaptive "
                                             "sampler dopri5 (default: 1e-5)")
    p.add_argument("--cfg", type=float, help="classifier-free guidance scale on the class or "
                                             "prompt (1: conditional, 0: unconditional)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise (default: 0)")
    p.add_argument("--out", required=True, help="samples file to write (.npz)")
    p.add_argument("--format", default="latentlab", choices=("latentlab", "adm"),
                   help="latentlab: images + labels (the public format); adm: also arr_0 "
                        "uint8 (N, H, W, C) and arr_1 labels, the layout the ADM evaluation "
                        "suite reads (default: latentlab)")
    p.add_argument("--grid", help="also save a PNG grid of the first 100 samples")
    p.set_defaults(func=cmd_sample)
