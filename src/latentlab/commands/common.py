"""Helpers the subcommands share: the run-directory options and the order settings merge in."""

from __future__ import annotations

import argparse

from latentlab import config as C
from latentlab.errors import UserError


def run_mode(args: argparse.Namespace) -> str:
    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite exclude each other")
    return "resume" if args.resume else "overwrite" if args.overwrite else "new"


def run_options(p: argparse.ArgumentParser, default_out: str | None = None) -> None:
    p.add_argument("--out", required=default_out is None, default=default_out,
                   help="run directory to create" + (f" (default: {default_out})"
                                                     if default_out else ""))
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its latest checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the run in --out and start again")


def merged(base: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        C.set_dotted(base, key, value)
    return base
