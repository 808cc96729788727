"""`latentlab toy-mixture`: the DAE paper's Gaussian-mixture table (`004_*.txt`, section 6.1)
for one encoder/decoder configuration (see `latentlab.study.toy_mixture`).

Only the result goes to stdout, as JSON; progress and logs go to stderr. Bad input exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from latentlab.errors import ConfigError


def _widths(text: str) -> tuple[int, ...]:
    """'64' -> (64, 64), the two hidden layers of a 3-layer network; '64,32' -> (64, 32)."""
    try:
        widths = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a width or comma-separated widths, got "
                                         f"'{text}'") from None
    return widths * 2 if len(widths) == 1 else widths


def cmd_toy_mixture(args: argparse.Namespace) -> int:
    import torch

    from latentlab.study.toy_mixture import ToyConfig, run_toy

    settings = {k: getattr(args, k) for k in (
        "k", "d", "std", "n", "seeds", "first_seed", "encoder_hidden", "decoder_hidden", "dae",
        "weak_width", "weak_dropout", "stage1_fraction", "latent", "kl_weight", "steps", "lr",
        "batch_size", "ema")}
    try:
        cfg = ToyConfig(**settings)
    except ValueError as e:  # "field: reason" from __post_init__ -> the option's name
        field, _, reason = str(e).partition(": ")
        raise ConfigError(f"--{field.replace('_', '-')}: {reason}") from None
    if args.threads < 0:
        raise ConfigError(f"--threads: must be >= 0, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_toy(cfg, args.out)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def register(sub) -> None:
    from latentlab.study.toy_mixture import ToyConfig

    d = ToyConfig()

    def default(name: str) -> str:
        value = getattr(d, name)
        if value is None:  # kl_weight
            return "1/d"
        return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)

    p = sub.add_parser(
        "toy-mixture", help="the DAE paper's Gaussian-mixture table: latent and reconstruction "
                            "1-NN accuracy",
        description="Train a KL-VAE with fully connected encoder and decoder on K Gaussian "
                    "clusters on the unit circle lifted to D dims, once per seed, and print JSON: "
                    "1-NN accuracy of the test latents (classifier fitted on the train latents) "
                    "and of the test reconstructions (fitted on the true train data), mean and "
                    "std over seeds in %%, beside the Bayes and raw-data 1-NN ceilings. See "
                    "docs/toy-mixture.md.")
    int_options = {"k": "clusters", "d": "dimension the 2-D mixture is lifted to",
                   "n": "training items per seed (the test split has n // 4)",
                   "seeds": "repetitions, each with its own mixture draw and initialisation",
                   "first_seed": "seed of the first repetition",
                   "latent": "latent dimensions", "steps": "optimizer steps per model (both "
                   "DAE stages together)", "batch_size": "items per optimizer step"}
    for name, text in int_options.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(d, name),
                       help=f"{text} (default: {default(name)})")
    float_options = {"std": "per-axis standard deviation of each cluster",
                     "weak_width": "width multiplier of the DAE's stage-1 decoder",
                     "weak_dropout": "dropout in the DAE's stage-1 decoder",
                     "stage1_fraction": "share of the steps in DAE stage 1",
                     "kl_weight": "weight of the KL term next to the per-element MSE; 1/d is "
                                  "the vanilla VAE's sum-of-squares + KL",
                     "lr": "peak learning rate",
                     "ema": "decay of the evaluated weight average, 0 for the live weights"}
    for name, text in float_options.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(d, name),
                       help=f"{text} (default: {default(name)})")
    for name in ("encoder_hidden", "decoder_hidden"):
        p.add_argument(f"--{name.replace('_', '-')}", type=_widths, default=getattr(d, name),
                       metavar="W[,W...]",
                       help=f"{name.split('_')[0]} hidden widths: one number for both hidden "
                            f"layers of the 3-layer net, or a comma list (default: "
                            f"{default(name)})")
    p.add_argument("--dae", action="store_true",
                   help="train as a DAE: stage 1 with a weak decoder, stage 2 a fresh full "
                        "decoder on the frozen encoder")
    p.add_argument("--out", help="keep each seed's run and toy.json in this new directory "
                                 "(default: a temporary directory, deleted)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads; layers this small only contend with more (default: "
                        "1; 0 leaves torch's default)")
    p.set_defaults(func=cmd_toy_mixture)
