"""`latentlab data info`: decode and check every item of a dataset (see `latentlab.data.info`)."""

from __future__ import annotations

import argparse


def cmd_data_info(args: argparse.Namespace) -> int:
    from latentlab.data.info import describe, format_description

    print(format_description(describe(args.spec, grid=args.grid)))
    return 0


def register(sub) -> None:
    p = sub.add_parser("data", help="inspect datasets")
    data_sub = p.add_subparsers(dest="data_command", required=True, parser_class=type(p))
    q = data_sub.add_parser("info", help="validate every item of a dataset and summarise it",
                            description="Decode and check every item of both splits; print "
                                        "size, shape, value range and label histogram.")
    q.add_argument("spec", help="dataset spec, e.g. digits, shapes:size=32, folder:PATH")
    q.add_argument("--grid", help="also save a grid of examples to this PNG")
    q.set_defaults(func=cmd_data_info)
