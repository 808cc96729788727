"""Typed configuration: dataclasses that load from YAML, take dotted overrides, and explain
themselves.

A config is a (nested) dataclass. Each field is documented by the string literal that follows it
(an attribute docstring, as litgpt does); those strings become `--help` text and the comments of
the YAML that `dump_yaml` writes. Precedence: dataclass defaults < YAML file < `--a.b value`.
Validation lives in each dataclass's `__post_init__`, which raises `ValueError("field: reason")`;
`from_dict` re-raises it as a one-line `ConfigError` that names the full dotted field.

Two shapes keep a config to what acts:
    a tagged union   `bottleneck: KLConfig | VQConfig`, each member a dataclass whose first field
                     is `kind: Literal["kl"] = "kl"`; the YAML section names its `kind` and holds
                     only that member's settings. Setting another `kind` starts that member afresh.
    an optional      `coupled: CoupledConfig | None = None`: a section that exists only when
    section          another field turns it on (the owner's `__post_init__` fills or refuses it).
A dataclass may define `upgrade(data) -> data` (a staticmethod) to read the layout of configs
that older versions wrote.
"""

from __future__ import annotations

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


def sections(tp: Any) -> tuple[type, ...]:
    """The dataclasses a field of type `tp` can hold: (tp,) for a dataclass, the members of a
    union (`A | B | None`), () for a plain value."""
    if dataclasses.is_dataclass(tp):
        return (tp,)
    if typing.get_origin(tp) in (Union, types.UnionType):
        return tuple(a for a in typing.get_args(tp) if dataclasses.is_dataclass(a))
    return ()


def kind_of(cls: type) -> str | None:
    """The tag of a tagged-union member (the default of its `kind` field), else None."""
    for f in dataclasses.fields(cls):
        if f.name == "kind" and typing.get_origin(_hints(cls)["kind"]) is Literal:
            return f.default
    return None


def _member(members: tuple[type, ...], kind: Any, name: str) -> type:
    """The member of a tagged union whose tag is `kind`; ConfigError naming the choices."""
    kinds = {kind_of(m): m for m in members}
    if kind not in kinds:
        raise ConfigError(f"{name}.kind must be {' | '.join(map(repr, kinds))}, got {kind!r}"
                          + did_you_mean(kind, kinds))
    return kinds[kind]


def did_you_mean(word: Any, choices) -> str:
    """' (did you mean X?)' when `word` is close to one of `choices`, else ''."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def switched(section: T | None, on: bool, default: type[T]) -> T | None:
    """An optional section as its owner's switch leaves it: `section` (or `default()` when
    absent) when `on`, else None. Settings of a section that is off are dropped (the command
    line refuses options that do not act; see `unused_overrides`)."""
    if not on:
        return None
    return default() if section is None else section


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin in (tuple, list):
        return f"list of {type_name(args[0])}" if args else "list"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """Check `value` against the annotation `tp`, converting where it is lossless."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    fail = ConfigError(f"{name} must be {type_name(tp)}, got {value!r}")
    members = sections(tp)
    if members and isinstance(value, dict):
        if kind_of(members[0]) is None:
            return from_dict(members[0], value, prefix=f"{name}.")
        member = _member(members, value.get("kind"), name)  # a tagged union: kind picks
        return from_dict(member, value, prefix=f"{name}.", union=members)
    if dataclasses.is_dataclass(tp):
        raise fail
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


def from_dict(cls: type[T], data: dict, prefix: str = "", union: tuple[type, ...] = ()) -> T:
    """Build dataclass `cls` from a plain dict; unknown keys and bad values raise ConfigError.
    `union`: the tagged union `cls` was picked from, to name the kind an unknown key belongs to.
    """
    hints = _hints(cls)
    if hasattr(cls, "upgrade"):
        data = cls.upgrade(dict(data))
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        owners = [kind_of(m) for m in union if unknown[0] in {f.name for f in
                                                              dataclasses.fields(m)}]
        if owners:
            kinds = " or ".join(filter(None, [", ".join(owners[:-1]), owners[-1]]))
            raise ConfigError(f"{prefix}{unknown[0]}: a setting of kind {kinds}, "
                              f"not of kind '{data['kind']}' (set {prefix}kind)")
        raise ConfigError(f"unknown field '{prefix}{unknown[0]}'"
                          + (did_you_mean(prefix + unknown[0], [prefix + f for f in fields]) or
                             f" (known in this section: {', '.join(sorted(fields))})"))
    kwargs = {}
    for k, v in data.items():
        default = _default(fields[k])
        if isinstance(v, dict) and "kind" not in v and getattr(default, "kind", None):
            v = {"kind": default.kind, **v}  # a section without a kind keeps the default's
        kwargs[k] = _coerce(v, hints[k], f"{prefix}{k}")
    try:
        return cls(**kwargs)
    except ValueError as e:  # raised by __post_init__ as "field: reason"
        raise ConfigError(f"{prefix}{e}") from None


def _acting(cfg: Any):
    """(field, value) of a dataclass, without optional sections that are off (None)."""
    hints = _hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if value is None and sections(hints[f.name]):
            continue
        yield f, value


def to_dict(cfg: Any) -> dict:
    """A dataclass as plain YAML-safe data (tuples become lists; sections that are off left
    out)."""
    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(value) for f, value in _acting(v)}
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
    """A new dict: `update` deep-merged into `base` (sections merge, values replace; a section
    whose `kind` changes is replaced whole, as its settings belong to the old kind)."""
    out = dict(base)
    for key, value in update.items():
        if (isinstance(value, dict) and isinstance(out.get(key), dict)
                and value.get("kind", out[key].get("kind")) == out[key].get("kind")):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def set_dotted(data: dict, key: str, value: Any) -> None:
    """data['a']['b'] = value for key 'a.b', creating sections on the way. Setting a section's
    `kind` to another kind empties the section first (its settings belong to the old kind)."""
    *path, leaf = key.split(".")
    for part in path:
        node = data.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set '{key}': '{part}' is not a section")
        data = node
    if leaf == "kind" and data.get("kind", value) != value:
        data.clear()
    data[leaf] = value


def apply_overrides(data: dict, overrides: dict[str, Any]) -> dict:
    """`data` with dotted `overrides` set in it, kinds first (so that `--x.kind vq --x.size 8`
    and `--x.size 8 --x.kind vq` mean the same)."""
    for key in sorted(overrides, key=lambda k: not k.endswith(".kind")):
        set_dotted(data, key, overrides[key])
    return data


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
    data = apply_overrides(read_yaml(path) if path else {}, overrides or {})
    try:
        return from_dict(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None


def leaves(cls: type, cfg: Any = None, prefix: str = "", every: bool = False):
    """(dotted name, type, value, doc) for every leaf field of a nested dataclass.

    With `cfg` (an instance of `cls`) the values are its own and only what acts is listed: the
    chosen member of each tagged union, no section that is off. With `every`, every member of
    every union and every optional section, each name once (a union's `kind` first).
    """
    hints, docs = _hints(cls), field_docs(cls)
    for f in dataclasses.fields(cls):
        if prefix and f.name == "kind" and kind_of(cls) is not None:
            continue  # listed by the union that holds this member
        tp, name = hints[f.name], f"{prefix}{f.name}"
        value = getattr(cfg, f.name) if cfg is not None else _default(f)
        members = sections(tp)
        if not members:
            yield name, tp, value, docs.get(f.name, "")
            continue
        tagged = [m for m in members if kind_of(m) is not None]
        if tagged:
            kinds = tuple(kind_of(m) for m in tagged)
            yield (f"{name}.kind", Literal[kinds], getattr(value, "kind", dataclasses.MISSING),
                   docs.get(f.name, ""))
        if every:
            for m in members:
                yield from leaves(m, value if isinstance(value, m) else None, f"{name}.", True)
        elif value is not None and value is not dataclasses.MISSING:
            yield from leaves(type(value), value, f"{name}.")


def dump_yaml(cfg: Any, comments: bool = True) -> str:
    """The config as YAML, only what acts (see `to_dict`), with each field's documentation as a
    comment above it; `comments=False` keeps one comment per top-level section."""
    lines: list[str] = []

    def emit(obj: Any, indent: str) -> None:
        docs = field_docs(type(obj))
        for f, value in _acting(obj):
            if f.name in docs and (comments or not indent):
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
