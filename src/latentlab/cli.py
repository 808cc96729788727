"""The `latentlab` command: the parser, the subcommands of `latentlab.commands.COMMANDS`, and
the way errors end.

Every user error (a bad option, config value, dataset or checkpoint) prints one line and exits
with status 2, without a traceback; a misspelt subcommand, option or choice is answered with the
closest valid one. A diverged training run exits with status 1.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import sys

from latentlab import __version__
from latentlab.commands import COMMANDS
from latentlab.errors import TrainingDiverged, UserError

DESCRIPTION = """\
Train latent generative models as one system: a tokenizer (autoencoder) that compresses data
into a latent, and a generator that models that latent. Runs on a CPU by default, on data that
ships with it.

Start with the demo, the digits study end to end (tokenizers, generators, samples, a report):
  latentlab demo

Or the two steps by hand, then sample and score:
  latentlab train-tokenizer --preset digits-kl --out runs/kl
  latentlab train-generator --tokenizer runs/kl --out runs/flow
  latentlab sample --generator runs/flow --n 100 --out samples.npz --grid samples.png
  latentlab evaluate runs/flow

Every command documents its options: latentlab COMMAND --help"""


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line, suggesting the closest valid word for a
    misspelt subcommand, option or choice."""

    def error(self, message: str):
        hint = "" if "(did you mean" in message else " (see --help)"
        self.exit(2, f"{self.prog}: error: {message}{hint}\n")

    def parse_args(self, args=None, namespace=None):
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:  # reported by the subcommand that was given them, with its options
            chosen = self._chosen(namespace)
            chosen.error(unrecognized(extras, list(chosen._option_string_actions)))
        return namespace

    def _check_value(self, action, value):
        # argparse's one check of a value against `choices`: presets, subcommands, --format ...
        if action.choices is not None and value not in action.choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in action.choices], n=1)
            if close:
                raise argparse.ArgumentError(
                    action, f"invalid choice: {value!r} (did you mean {close[0]}?)")
        super()._check_value(action, value)

    def _chosen(self, namespace: argparse.Namespace) -> argparse.ArgumentParser:
        """The deepest (sub)parser the command line chose, e.g. that of `data info`."""
        parser = self
        while True:
            subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
            name = getattr(namespace, subs[0].dest, None) if subs else None
            if name not in (subs[0].choices if subs else {}):
                return parser
            parser = subs[0].choices[name]


def unrecognized(extras: list[str], options: list[str]) -> str:
    """argparse's message for unknown arguments, with the closest known option after each
    unknown one (whose value, the word after it, is left out)."""
    words = []
    for i, arg in enumerate(extras):
        if arg.startswith("-"):
            name = arg.split("=", 1)[0]
            close = difflib.get_close_matches(name, options, n=1)
            words.append(f"{name} (did you mean {close[0]}?)" if close else arg)
        elif i == 0 or not extras[i - 1].startswith("-"):
            words.append(arg)
    return "unrecognized arguments: " + " ".join(words)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="latentlab", description=DESCRIPTION,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"latentlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in COMMANDS:
        module.register(sub)
    return parser


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
