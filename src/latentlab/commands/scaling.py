"""`latentlab scaling`: fit the scaling law of tiny generators on a latent cache and check its
extrapolation to a larger width (see `latentlab.recipes.scaling_run`).

Only the result goes to stdout, as JSON; progress and logs go to stderr. An ill-posed fit is a
result (exit 0, `"fit": null` with `"fit_error"`, and a warning on stderr); bad input exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from latentlab import config as C
from latentlab.commands import options
from latentlab.commands.common import run_mode as _mode
from latentlab.commands.common import run_options as _run_options


def cmd_scaling(args: argparse.Namespace) -> int:
    from latentlab.recipes.scaling_run import ScalingConfig, scaling_study
    from latentlab.training.skeleton import config_file

    mode = _mode(args)
    cfg = C.load(ScalingConfig, config_file(args.config, args.out, mode),
                 options.overrides_from(args))
    result = scaling_study(cfg, args.cache, args.out, mode, test_cache=args.test_cache)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def register(sub) -> None:
    from latentlab.recipes.scaling_run import ScalingConfig

    p = sub.add_parser(
        "scaling", help="check the scaling-law extrapolation of tiny generators on a cache",
        description="Train tiny generators of several widths for equal steps on a latent cache, "
                    "fit L(N) = E + A N^-alpha to their held-out losses, predict the loss at a "
                    "larger width and, with --verify true, train it and compare. Prints JSON; "
                    "writes OUT/scaling.json, OUT/scaling.png and one run per width. Settings "
                    "come from --config FILE.yaml (with --resume: the study's own), then the "
                    "options below.")
    p.add_argument("--cache", required=True, help="latent cache directory (latentlab encode)")
    p.add_argument("--test-cache", help="score on this cache instead of the cache's held-out "
                                        "tail")
    p.add_argument("--config", help="YAML file of the study's settings")
    _run_options(p, default_out="runs/scaling")
    options.add_arguments(p, ScalingConfig)
    p.set_defaults(func=cmd_scaling)
