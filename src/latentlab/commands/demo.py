"""`latentlab demo`: the main job, the digits study of every recipe (see `latentlab.study.demo`)."""

from __future__ import annotations

import argparse


def cmd_demo(args: argparse.Namespace) -> int:
    from latentlab.study.demo import run_demo

    run_demo(args.out)
    return 0


def register(sub) -> None:
    p = sub.add_parser("demo", help="the main job: the digits study of every recipe",
                       description="Run the demo study on the built-in handwritten digits: "
                                   "every recipe x 2 seeds (tokenizer, generator, samples, "
                                   "evaluation), then write report.html and print the "
                                   "headline comparison.")
    p.add_argument("--out", default="runs/demo", help="output directory, replaced if it holds "
                                                      "an earlier demo (default: runs/demo)")
    p.set_defaults(func=cmd_demo)
