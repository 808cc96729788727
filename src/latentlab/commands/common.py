"""Helpers the subcommands share: the run-directory options, where a config comes from, and
the help of a config command."""

from __future__ import annotations

import argparse
from pathlib import Path

from latentlab import config as C
from latentlab.commands import options
from latentlab.errors import UserError
from latentlab.training.rundir import CONFIG


def run_mode(args: argparse.Namespace) -> str:
    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite exclude each other")
    return "resume" if args.resume else "overwrite" if args.overwrite else "new"


def run_options(p: argparse.ArgumentParser, default_out: str | None = None) -> None:
    p.add_argument("--out", default=default_out,
                   help="run directory to create" + (f" (default: {default_out})"
                                                     if default_out else ""))
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its latest checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the run in --out and start again")


def given_config(args: argparse.Namespace, cls: type, overrides: dict):
    """The config of `--config FILE`, or with `--resume` the run's own config.yaml (a run to
    resume must have one), with `overrides` set; None when neither applies (the command's
    default then)."""
    path = args.config
    if not path and args.resume and args.out:
        path = Path(args.out) / CONFIG
        if not path.exists():
            raise UserError(f"{args.out}: no run to resume (no {CONFIG})")
    return C.load(cls, path, overrides) if path else None


def config_parser(sub, name: str, what: str, **kwargs) -> argparse.ArgumentParser:
    """The parser of a subcommand whose settings are a config: its `--a.b` options (added by
    `config.add_arguments`) are every kind's, so any can be set; `--help` lists those that act
    in the configuration the other arguments compose, with its values, and `--help-all` all."""
    p = sub.add_parser(name, add_help=False, help=what,
                       usage=f"latentlab {name} --out DIR [--config FILE] [--a.b VALUE ...]",
                       **kwargs)
    p.add_argument("-h", "--help", action="store_true",
                   help="show the options that act in the chosen configuration and exit")
    p.add_argument("--help-all", action="store_true",
                   help="show the options of every kind and section and exit")
    p.set_defaults(parser=p)
    return p


def configured(args: argparse.Namespace, cfg) -> bool:
    """Print the help asked for (True: the command is done), or check that there is an --out and
    that every `--a.b` option given acts in `cfg` (a setting of a section that is off is a
    one-line error)."""
    if args.help or args.help_all:
        if not args.help_all:
            options.show_acting(args.parser, cfg)
        args.parser.print_help()
        return True
    if args.out is None:
        raise UserError("--out: required (the run directory)")
    unused = options.unused_overrides(cfg, options.overrides_from(args))
    if unused:
        raise UserError(f"--{unused[0]}: does not act in this configuration (its section is "
                        "off; see --help)")
    return False
