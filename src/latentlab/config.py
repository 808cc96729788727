"""Typed configuration: dataclasses that load from YAML, take dotted overrides, and explain
themselves.

A config is a (nested) dataclass. Each field is documented by the string literal that follows it
(an attribute docstring, as litgpt does); those strings become `--help` text and the comments of
the YAML that `dump_yaml` writes. Precedence: dataclass defaults < YAML file < `--a.b value`.
Validation lives in each dataclass's `__post_init__`, which raises `ValueError("field: reason")`;
`from_dict` re-raises it as a one-line `ConfigError` that names the full dotted field.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from latentlab.errors import ConfigError

T = TypeVar("T")


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass (the string literal after each field), by name."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):  # no source (e.g. frozen app): help stays terse
            continue
        body = tree.body[0].body
        for node, nxt in zip(body, body[1:] + [None], strict=True):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin in (tuple, list):
        return f"list of {_type_name(args[0])}" if args else "list"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """Check `value` against the annotation `tp`, converting where it is lossless."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    fail = ConfigError(f"{name} must be {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise fail
        return from_dict(tp, value, prefix=f"{name}.")
    if origin in (Union, types.UnionType):
        for arg in args:
            try:
                return _coerce(value, arg, name)
            except ConfigError:
                continue
        raise fail
    if origin is Literal:
        if value not in args:
            raise fail
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise fail
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{name}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if tp is Any:
        return value
    if tp is type(None):
        if value is not None:
            raise fail
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise fail
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML reads 3e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise fail from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise fail
        return value
    raise TypeError(f"unsupported config type {tp!r} for {name}")


def from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    """Build dataclass `cls` from a plain dict; unknown keys and bad values raise ConfigError."""
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown field '{prefix}{unknown[0]}' (known in this section: "
                          f"{', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ValueError as e:  # raised by __post_init__ as "field: reason"
        raise ConfigError(f"{prefix}{e}") from None


def to_dict(cfg: Any) -> dict:
    """A dataclass as plain YAML-safe data (tuples become lists)."""
    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v
    return plain(cfg)


def first_difference(a: Any, b: Any, skip: tuple[str, ...] = ()) -> tuple[str, Any, Any] | None:
    """The first field (dotted name, value in a, value in b) where two configs differ, or None.

    Fields named in `skip` (dotted) are not compared.
    """
    def walk(x, y, prefix):
        for key in x:
            name = f"{prefix}{key}"
            if name in skip:
                continue
            if isinstance(x[key], dict) and isinstance(y.get(key), dict):
                found = walk(x[key], y[key], f"{name}.")
                if found:
                    return found
            elif x[key] != y.get(key):
                return name, x[key], y.get(key)
        return None

    return walk(to_dict(a), to_dict(b), "")


def merge(base: dict, update: dict) -> dict:
    """A new dict: `update` deep-merged into `base` (sections merge, values replace)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def set_dotted(data: dict, key: str, value: Any) -> None:
    """data['a']['b'] = value for key 'a.b', creating sections on the way."""
    *path, leaf = key.split(".")
    for part in path:
        node = data.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set '{key}': '{part}' is not a section")
        data = node
    data[leaf] = value


def parse_value(text: str) -> Any:
    """A command-line value read as YAML: '500' -> 500, 'true' -> True, '[1,2]' -> [1, 2]."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def read_yaml(path: str | Path) -> dict:
    """A YAML mapping from a file, with a one-line error naming the file when it is not one."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping, got {type(data).__name__}")
    return data


def load(cls: type[T], path: str | Path | None = None,
         overrides: dict[str, Any] | None = None) -> T:
    """Defaults < YAML file at `path` < dotted `overrides` ({'train.steps': 500})."""
    data = read_yaml(path) if path else {}
    for key, value in (overrides or {}).items():
        set_dotted(data, key, value)
    try:
        return from_dict(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None


def _leaves(cls: type, prefix: str = ""):
    """(dotted name, type, default, doc) for every leaf field of a nested dataclass."""
    hints, docs = _hints(cls), field_docs(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _leaves(tp, f"{prefix}{f.name}.")
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        yield f"{prefix}{f.name}", tp, default, docs.get(f.name, "")


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One `--a.b VALUE` option per leaf field of `cls`, documented from its docstring."""
    groups: dict[str, Any] = {}
    for name, tp, default, doc in _leaves(cls):
        section = name.split(".")[0] if "." in name else None
        target = parser if section is None else groups.setdefault(
            section, parser.add_argument_group(f"{section} options"))
        shown = "required" if default is dataclasses.MISSING else f"default: {default!r}"
        shown_type = _type_name(tp) if typing.get_origin(tp) is Literal else _type_name(tp).upper()
        target.add_argument(f"--{name}", dest=f"cfg:{name}", metavar=shown_type,
                            type=str if tp is str else parse_value,
                            default=argparse.SUPPRESS, help=f"{doc} ({shown})")


def overrides_from(namespace: argparse.Namespace) -> dict[str, Any]:
    """The dotted overrides a user gave on the command line (options added by add_arguments)."""
    return {k[4:]: v for k, v in vars(namespace).items() if k.startswith("cfg:")}


def dump_yaml(cfg: Any) -> str:
    """The config as YAML with each field's documentation as a comment above it."""
    lines: list[str] = []

    def emit(obj: Any, indent: str) -> None:
        docs = field_docs(type(obj))
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.name in docs:
                lines.extend(f"{indent}# {line}" for line in textwrap.wrap(docs[f.name], 96))
            if dataclasses.is_dataclass(value):
                lines.append(f"{indent}{f.name}:")
                emit(value, indent + "  ")
            else:
                text = yaml.safe_dump(to_dict(value), default_flow_style=True, width=1000)
                text = text.strip().removesuffix("...").strip()
                lines.append(f"{indent}{f.name}: {text}")

    emit(cfg, "")
    return "\n".join(lines) + "\n"
