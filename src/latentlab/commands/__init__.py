"""Subcommands that live outside `cli.py`: each module here defines `register(sub)`, which adds
its parsers to the `latentlab` command's subparsers (`cli.build_parser` calls every one, in name
order). A command's function takes the parsed arguments and returns the exit status; user errors
are raised as `latentlab.errors.UserError` and printed by `cli.main` as one line.
"""
