"""The subcommands of `latentlab`, one module per group, each with `register(sub)`, which adds
its parsers to the command's subparsers. A command's function takes the parsed arguments and
returns the exit status; user errors are raised as `latentlab.errors.UserError` and printed by
`cli.main` as one line. `COMMANDS` is the registry: `cli.build_parser` registers these modules
in this order, which is the order of `latentlab --help`.
"""

from latentlab.commands import (
    codec,
    data,
    demo,
    evaluate,
    generator,
    scaling,
    study,
    tokenizer,
    toy,
)

COMMANDS = (demo, study, tokenizer, generator, evaluate, scaling, toy, codec, data)
"""demo, study; train-tokenizer, encode; train-generator, sample; evaluate; scaling;
toy-mixture; train-codec, compress, decompress; data info."""

__all__ = ["COMMANDS"]
