"""`latentlab scaling`: fit the scaling law of tiny generators on a latent cache and check its
extrapolation to a larger width (see `latentlab.recipes.scaling_run`).

Only the result goes to stdout, as JSON; progress and logs go to stderr. An ill-posed fit is a
result (exit 0, `"fit": null` with `"fit_error"`, and a warning on stderr); bad input exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from latentlab.commands.common import run_mode as _mode
from latentlab.commands.common import run_options as _run_options
from latentlab.errors import ConfigError


def _widths(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got "
                                         f"'{text}'") from None


def cmd_scaling(args: argparse.Namespace) -> int:
    from latentlab.recipes.scaling_run import ScalingConfig, scaling_study

    settings = {k: getattr(args, k) for k in (
        "widths", "predict", "verify", "family", "depth", "steps", "batch_size", "lr",
        "warmup", "ema", "precision", "seed", "heldout_fraction", "eval_draws")}
    try:
        cfg = ScalingConfig(**settings)
    except ValueError as e:  # "field: reason" from __post_init__ -> the option's name
        field, _, reason = str(e).partition(": ")
        raise ConfigError(f"--{field.replace('_', '-')}: {reason}") from None
    result = scaling_study(cfg, args.cache, args.out, _mode(args), test_cache=args.test_cache)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def register(sub) -> None:
    from latentlab.recipes.scaling_run import ScalingConfig

    d = ScalingConfig()
    p = sub.add_parser(
        "scaling", help="check the scaling-law extrapolation of tiny generators on a cache",
        description="Train tiny generators of several widths for equal steps on a latent cache, "
                    "fit L(N) = E + A N^-alpha to their held-out losses, predict the loss at a "
                    "larger width and, with --verify, train it and compare. Prints JSON; writes "
                    "OUT/scaling.json, OUT/scaling.png and one run per width.")
    p.add_argument("--cache", required=True, help="latent cache directory (latentlab encode)")
    p.add_argument("--test-cache", help="score on this cache instead of the cache's held-out "
                                        "tail")
    p.add_argument("--widths", type=_widths, default=d.widths, metavar="W1,W2,W3",
                   help=f"widths to fit on (default: {','.join(map(str, d.widths))})")
    p.add_argument("--predict", type=int, default=d.predict,
                   help=f"width whose loss is predicted (default: {d.predict})")
    p.add_argument("--verify", action="store_true", help="also train the --predict width and "
                                                         "report predicted vs actual")
    p.add_argument("--family", default=d.family, choices=["auto", "flow", "ddpm", "vpsde", "ar"],
                   help="tiny generator family (default: auto: flow for continuous latents, ar "
                        "for token indices)")
    p.add_argument("--depth", type=int, default=d.depth,
                   help=f"blocks of every tiny generator (default: {d.depth})")
    p.add_argument("--steps", type=int, default=d.steps,
                   help=f"optimizer steps per width (default: {d.steps})")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"items per step (default: {d.batch_size})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default: {d.lr})")
    p.add_argument("--warmup", type=int, default=d.warmup,
                   help=f"warmup steps (default: {d.warmup})")
    p.add_argument("--ema", type=float, default=d.ema,
                   help=f"decay of the scored weight average, 0 for none (default: {d.ema})")
    p.add_argument("--precision", default=d.precision, choices=["bf16", "fp32"],
                   help=f"training precision (default: {d.precision})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed (default: {d.seed})")
    p.add_argument("--heldout-fraction", type=float, default=d.heldout_fraction,
                   help=f"share of the cache held out for scoring (default: "
                        f"{d.heldout_fraction})")
    p.add_argument("--eval-draws", type=int, default=d.eval_draws,
                   help=f"(t, noise) draws per held-out item (default: {d.eval_draws})")
    _run_options(p, default_out="runs/scaling")
    p.set_defaults(func=cmd_scaling)
