"""Captions of an image folder, read once when the dataset is made.

Two sources, the common image-text folder conventions:

    root/a.png + root/a.txt        the caption of a.png is the text of a.txt beside it (UTF-8)
    root/captions.jsonl            one JSON object per line, e.g. {"file_name": "sub/a.png",
                                   "text": "a red circle"}: the image path relative to the
                                   folder holding the file (Hugging Face `datasets` imagefolder
                                   metadata convention), the caption under "text" or "caption"

A captions.jsonl may sit in the split folder (root/train/captions.jsonl) or in the root of a
train/test folder (its file_name then starts with train/ or test/). Where both sources name an
image, captions.jsonl wins. A folder with neither is uncaptioned.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from latentlab.errors import DataError

CAPTIONS_FILE = "captions.jsonl"
FILE_KEY = "file_name"
TEXT_KEYS = ("text", "caption")


class CaptionError(DataError):
    """A missing, empty or undecodable caption (skipped, like a corrupt image, with
    `skip_corrupt`)."""


def text_files(top: Path, rel: str = "") -> Iterator[str]:
    """Paths of the visible .txt files under `top`, relative to it."""
    with os.scandir(top / rel) as scan:
        for entry in scan:
            if entry.name.startswith("."):
                continue
            path = f"{rel}/{entry.name}" if rel else entry.name
            if entry.is_dir():
                yield from text_files(top, path)
            elif entry.name.endswith(".txt"):
                yield path


def _relative(base: Path, top: Path, name: str) -> str:
    """`name`, relative to `base`, as a path relative to `top` with "/" separators."""
    path = os.path.normpath(name if base == top else os.path.relpath(base / name, top))
    return path.replace(os.sep, "/")


def _jsonl_captions(jsonl: Path, top: Path) -> dict[str, str | CaptionError]:
    """{image path relative to top: caption or its error} from one captions.jsonl."""
    found: dict[str, str | CaptionError] = {}
    with open(jsonl, "rb") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{jsonl}: line {number}"
            try:
                entry = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise DataError(f"{where}: not a UTF-8 JSON object") from None
            if not isinstance(entry, dict) or not isinstance(entry.get(FILE_KEY), str):
                raise DataError(f"{where}: needs a {FILE_KEY!r} string")
            key = next((k for k in TEXT_KEYS if k in entry), None)
            if key is None:
                raise DataError(f"{where}: needs a caption under {' or '.join(TEXT_KEYS)}")
            rel = _relative(jsonl.parent, top, entry[FILE_KEY])
            text = entry[key]
            if not isinstance(text, str) or not text.strip():
                found[rel] = CaptionError(f"{where}: empty caption for {entry[FILE_KEY]}")
            else:
                found[rel] = text.strip()
    return found


def _text_file_caption(path: Path) -> str | CaptionError:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        return CaptionError(f"{path}: cannot decode caption (not UTF-8)")
    except OSError as e:
        return CaptionError(f"{path}: cannot read caption ({e.strerror})")
    return text.strip() or CaptionError(f"{path}: empty caption")


def read_captions(root: Path, top: Path, files: list[str]) -> list[str | CaptionError] | None:
    """The caption of each image (paths relative to `top`), or its error; None when the folder
    has no captions at all.

    Args:
        root: the dataset folder.
        top: the split's folder (root, or root/train, root/test).
        files: image paths relative to `top`.
    """
    jsonl: dict[str, str | CaptionError] = {}
    for path in dict.fromkeys([root / CAPTIONS_FILE, top / CAPTIONS_FILE]):
        if path.is_file():
            jsonl.update(_jsonl_captions(path, top))
    texts = set(text_files(top))
    if not jsonl and not texts:
        return None
    captions: list[str | CaptionError] = []
    for rel in files:
        txt = os.path.splitext(rel)[0] + ".txt"
        if rel in jsonl:
            captions.append(jsonl[rel])
        elif txt in texts:
            captions.append(_text_file_caption(top / txt))
        else:
            captions.append(CaptionError(f"{top / rel}: no caption (no {Path(txt).name} beside "
                                         f"it, no entry in {CAPTIONS_FILE})"))
    return captions
