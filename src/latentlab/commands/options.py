"""Command-line options of a config (see `latentlab.config`): one `--a.b VALUE` per field,
documented from its attribute docstring, and the help narrowed to what acts in one config."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Literal

import yaml

from latentlab import config as C


def parse_value(text: str) -> Any:
    """A command-line value read as YAML: '500' -> 500, 'true' -> True, '[1,2]' -> [1, 2]."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One `--a.b VALUE` option per leaf field of `cls`, every kind's (so that any can be set),
    documented from its docstring. `show_acting` then narrows the help to one config."""
    groups: dict[str, Any] = {}
    seen: set[str] = set()
    for name, tp, default, doc in C.leaves(cls, every=True):
        if name in seen:
            continue
        seen.add(name)
        section = name.rsplit(".", 1)[0] if "." in name else None
        target = parser if section is None else groups.setdefault(
            section, parser.add_argument_group(f"{section} options"))
        shown = "" if default is dataclasses.MISSING else f" (default: {default!r})"
        shown_type = C.type_name(tp)
        shown_type = shown_type if typing.get_origin(tp) is Literal else shown_type.upper()
        action = target.add_argument(
            f"--{name}", dest=f"cfg:{name}", metavar=shown_type, help=f"{doc}{shown}",
            type=str if tp is str else parse_value, default=argparse.SUPPRESS)
        action.doc = doc


def show_acting(parser: argparse.ArgumentParser, cfg: Any) -> None:
    """Narrow the help of the options `add_arguments` made to those that act in `cfg` (the chosen
    kind of each union, no section that is off), each with the first sentence of its doc and
    `cfg`'s value as its default; the others stay accepted, but hidden."""
    acting = {name: value for name, _, value, _ in C.leaves(type(cfg), cfg)}
    for action in parser._actions:
        name = action.dest.removeprefix("cfg:")
        if name == action.dest:
            continue
        first = action.doc.split(". ")[0].removesuffix(".")  # --help-all keeps the whole doc
        action.help = (f"{first}. (default: {acting[name]!r})" if name in acting
                       else argparse.SUPPRESS)


def overrides_from(namespace: argparse.Namespace) -> dict[str, Any]:
    """The dotted overrides a user gave on the command line (options added by add_arguments)."""
    return {k[4:]: v for k, v in vars(namespace).items() if k.startswith("cfg:")}


def unused_overrides(cfg: Any, overrides: dict[str, Any]) -> list[str]:
    """The dotted overrides that do not act in `cfg` (a section its switch turned off)."""
    acting = {name for name, *_ in C.leaves(type(cfg), cfg)}
    return [k for k in overrides if k not in acting]
