"""`latentlab toy-mixture`: the DAE paper's Gaussian-mixture table (`004_*.txt`, section 6.1)
for one encoder/decoder configuration (see `latentlab.study.toy_mixture`).

Only the result goes to stdout, as JSON; progress and logs go to stderr. Bad input exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from latentlab import config as C
from latentlab.commands import options
from latentlab.commands.common import run_mode
from latentlab.errors import ConfigError


def cmd_toy_mixture(args: argparse.Namespace) -> int:
    import torch

    from latentlab.study.toy_mixture import ToyConfig, run_toy
    from latentlab.training.skeleton import config_file

    mode = run_mode(args)
    if mode != "new" and not args.out:
        raise ConfigError(f"--{mode}: needs --out (the study to {mode})")
    cfg = C.load(ToyConfig, config_file(args.config, args.out, mode), options.overrides_from(args))
    if args.threads < 0:
        raise ConfigError(f"--threads: must be >= 0, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_toy(cfg, args.out, mode)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def register(sub) -> None:
    from latentlab.study.toy_mixture import ToyConfig

    p = sub.add_parser(
        "toy-mixture", help="the DAE paper's Gaussian-mixture table: latent and reconstruction "
                            "1-NN accuracy",
        description="Train a KL-VAE with fully connected encoder and decoder on K Gaussian "
                    "clusters on the unit circle lifted to D dims, once per seed, and print JSON: "
                    "1-NN accuracy of the test latents (classifier fitted on the train latents) "
                    "and of the test reconstructions (fitted on the true train data), mean and "
                    "std over seeds in %%, beside the Bayes and raw-data 1-NN ceilings. Settings "
                    "come from --config FILE.yaml, then the options below. See "
                    "docs/toy-mixture.md.")
    p.add_argument("--config", help="YAML file of the study's settings")
    p.add_argument("--out", help="keep the config, each seed's run and toy.json in this run "
                                 "directory (default: a temporary directory, deleted)")
    p.add_argument("--resume", action="store_true",
                   help="finish the study in --out, reusing its finished seeds")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the study in --out and start again")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads; layers this small only contend with more (default: "
                        "1; 0 leaves torch's default)")
    options.add_arguments(p, ToyConfig)
    p.set_defaults(func=cmd_toy_mixture)
