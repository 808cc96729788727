"""Dataset spec strings, as written on the command line and in YAML configs.

Grammar::

    SPEC    := KIND | KIND ":" ITEMS | PATH
    ITEMS   := ITEM ("," ITEM)*
    ITEM    := KEY "=" VALUE | PATH        (a bare PATH only as the first item of an on-disk kind)

Examples: ``digits``, ``mixture:k=8,d=10,std=0.5``, ``folder:/data/imgs,resize=32``,
``npz:/x/data.npz``, ``/x/data.npz``,
``shapes:objects=3,shapes=6,phrasings=on,holdout=green triangle/red-circle``. A bare PATH (an
existing ``.npz`` file or directory) has its kind inferred by `infer_kind`. Options are typed
per kind in `KINDS`; a spec that does not parse raises a one-line `DataError` naming the spec
and what is wrong. Paths cannot contain a comma, since the comma separates options.

Options of ``shapes`` beyond size, n and seed: ``objects=K`` (1..3; K > 1 is the compositional
world of 1..K objects per image in distinct cells of the 3x3 grid, with sizes and relations),
``shapes=M`` (3..6: circle, square, triangle, then star, diamond, cross), ``phrasings=on|off``
(varied wordings of the same content) and ``holdout=PAIRS``: colour-shape pairs that no training
image contains (the test split keeps them), pairs separated by "/", the colour and the shape of
a pair by a space or a hyphen, e.g. ``holdout=green-triangle/red-circle``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from latentlab.data.cifar import TRAIN_FILES as CIFAR10_TRAIN_FILES
from latentlab.data.mnist import FILES as MNIST_FILES
from latentlab.data.shapes import MAX_SHAPES, MIN_SHAPES, OBJECTS, PALETTE, SHAPES_ALL
from latentlab.errors import DataError

REQUIRED = object()  # the default of an option that has none


@dataclass(frozen=True)
class Option:
    """One typed option of a dataset kind.

    Attributes:
        expects: what the value must be, as the error message says it ("a positive integer").
        parse: str -> typed value; raises ValueError when the text is not a valid value.
        default: the value when the spec omits the option, or REQUIRED.
    """

    expects: str
    parse: Callable[[str], object]
    default: object = REQUIRED


def _at_least(low: int | float, cast: type) -> Callable[[str], object]:
    def parse(text: str):
        value = cast(text)
        if not (value >= low and math.isfinite(value)):  # NaN and inf fail too
            raise ValueError(text)
        return value

    return parse


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise ValueError(text)
    return value


def _channels(text: str) -> int:
    if text not in ("1", "3"):
        raise ValueError(text)
    return int(text)


def _image_size(text: str) -> tuple[int, int]:
    """'N' -> (N, N); 'HxW' -> (H, W)."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2):
        raise ValueError(text)
    sizes = tuple(_at_least(1, int)(p) for p in parts)
    return (sizes[0], sizes[-1])


def _in_range(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise ValueError(text)
        return value

    return parse


def _switch(text: str) -> bool:
    if text.lower() not in ("on", "off"):
        raise ValueError(text)
    return text.lower() == "on"


def _pairs(text: str) -> frozenset[tuple[str, str]]:
    """'green triangle/red-circle' -> {("green", "triangle"), ("red", "circle")}."""
    pairs = set()
    for pair in text.split("/"):
        words = re.split(r"[\s-]+", pair.strip())
        if len(words) != 2 or words[0] not in PALETTE or words[1] not in SHAPES_ALL:
            raise ValueError(text)
        pairs.add((words[0], words[1]))
    return frozenset(pairs)


def _directory(text: str) -> Path:
    if not text or not Path(text).is_dir():
        raise ValueError(text)
    return Path(text)


def _npz_file(text: str) -> Path:
    if not text or not Path(text).is_file():
        raise ValueError(text)
    return Path(text)


SEED = Option("a non-negative integer", _at_least(0, int), 0)
DIRECTORY = Option("an existing directory", _directory)
TEST_FRACTION = Option("a number strictly between 0 and 1", _fraction, 0.1)


def _count(default: int) -> Option:
    return Option("a positive integer", _at_least(1, int), default)


# Every dataset kind and its options, in the order `known:` lists them.
KINDS: dict[str, dict[str, Option]] = {
    "digits": {},
    "mixture": {
        "k": _count(8),
        "d": Option("an integer >= 2", _at_least(2, int), 10),
        "std": Option("a non-negative number", _at_least(0.0, float), 0.5),
        "n": _count(2000),
        "seed": SEED,
    },
    "shapes": {
        "size": Option("an integer >= 8", _at_least(8, int), 32),
        "n": _count(4000),
        "seed": SEED,
        "objects": Option(f"an integer from 1 to {OBJECTS}", _in_range(1, OBJECTS), 1),
        "shapes": Option(f"an integer from {MIN_SHAPES} to {MAX_SHAPES}",
                         _in_range(MIN_SHAPES, MAX_SHAPES), MIN_SHAPES),
        "phrasings": Option("on or off", _switch, False),
        "holdout": Option(f"colour-shape pairs separated by '/' (colours: {', '.join(PALETTE)}; "
                          f"shapes: {', '.join(SHAPES_ALL)})", _pairs, frozenset()),
    },
    "faces": {"size": _count(32)},
    "folder": {
        "path": DIRECTORY,
        "resize": Option("N or HxW with positive integers", _image_size, None),
        "channels": Option("1 or 3", _channels, None),
        "test_fraction": TEST_FRACTION,
        "seed": SEED,
    },
    "npz": {"path": Option("an existing file", _npz_file), "test_fraction": TEST_FRACTION,
            "seed": SEED},
    "mnist": {"path": DIRECTORY},
    "cifar10": {"path": DIRECTORY},
}

_OPTION_ITEM = re.compile(r"^\s*[A-Za-z_]\w*\s*=")


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed spec.

    Attributes:
        text: the spec as written, used in names and messages.
        kind: a key of `KINDS`.
        options: every option of the kind, typed, with defaults filled in.
    """

    text: str
    kind: str
    options: dict[str, object]


def infer_kind(path: Path) -> str | None:
    """The kind of a bare path: .npz file, MNIST or CIFAR-10 directory, or image folder."""
    if path.is_file():
        return "npz" if path.suffix.lower() == ".npz" else None
    if not path.is_dir():
        return None
    probe = MNIST_FILES["train"][0]
    if (path / probe).is_file() or (path / f"{probe}.gz").is_file():
        return "mnist"
    if (path / CIFAR10_TRAIN_FILES[0]).is_file():
        return "cifar10"
    return "folder"


def parse_spec(text: str) -> DatasetSpec:
    """Parse a dataset spec string (see the module docstring for the grammar).

    Raises:
        DataError: one line naming the spec and what is wrong with it.
    """

    def fail(reason: str) -> DataError:
        return DataError(f"dataset spec {text!r}: {reason}")

    head, _, rest = text.partition(":")
    if head.strip() in KINDS:
        kind, items = head.strip(), (rest.split(",") if rest.strip() else [])
    else:
        kind, items = _bare_path(text, head, fail), [text]
    return DatasetSpec(text, kind, _options(kind, items, fail))


def _bare_path(text: str, head: str, fail: Callable[[str], DataError]) -> str:
    kind = infer_kind(Path(text))
    if kind is not None:
        return kind
    if Path(text).exists():
        raise fail("cannot tell the kind of this file; write KIND:PATH, e.g. npz:PATH")
    if re.fullmatch(r"[A-Za-z_]\w*", head.strip()):
        raise fail(f"unknown kind {head.strip()!r} (known: {', '.join(KINDS)})")
    raise fail("no such file or directory")


def _options(kind: str, items: list[str], fail: Callable[[str], DataError]) -> dict[str, object]:
    declared = KINDS[kind]
    raw: dict[str, str] = {}
    for n, item in enumerate(items):
        if n == 0 and "path" in declared and not _OPTION_ITEM.match(item):
            key, value = "path", item.strip()
        elif "=" not in item:
            raise fail(f"expected key=value, got {item.strip()!r}" if item.strip()
                       else "empty option (two commas in a row or a trailing comma?)")
        else:
            key, value = (part.strip() for part in item.split("=", 1))
        if key not in declared:
            known = ", ".join(declared) or "none"
            raise fail(f"unknown option {key!r} for kind {kind!r} (known: {known})")
        if key in raw:
            raise fail(f"option {key!r} is given twice")
        raw[key] = value
    return {key: _typed(key, option, raw.get(key), fail) for key, option in declared.items()}


def _typed(key: str, option: Option, value: str | None, fail: Callable[[str], DataError]):
    if value is None:
        if option.default is REQUIRED:
            raise fail(f"option {key!r} is required")
        return option.default
    try:
        return option.parse(value)
    except ValueError:
        raise fail(f"option {key!r} must be {option.expects}, got {value!r}") from None
