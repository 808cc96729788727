"""The caption of a `shapes` item, written from its structured attributes (one row of `Scenes`).

Without a phrasing generator the wording is canonical: "a red circle at the top left" (the
single-object world, which states no size), "a small red circle left of a large blue square and
a small green star at the bottom" (the compositional world). With one, each choice below (article,
position wording, relation synonym, conjunction, frame) is drawn per item, so the same content is
said in several ways; the canonical choice is always the first of each list.

`parse_caption` reads any of these wordings back into attributes, so a prompt typed by a user can
be judged like a caption.

Legend: K objects per item at most, A attributes per object.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

RELATIONS = ["left of", "right of", "above", "below"]
RELATION_WORDS = {
    "left of": ["left of", "to the left of", "on the left of"],
    "right of": ["right of", "to the right of", "on the right of"],
    "above": ["above", "over"],
    "below": ["below", "under", "beneath"],
}
ARTICLES = ["a", "one"]
POSITION_WORDS = ["at the {}", "located at the {}", "placed at the {}"]
CONJUNCTIONS = ["and", "as well as", "with"]
FRAMES = ["{}", "there is {}", "an image of {}", "a picture with {}", "{} on a black background"]

Choose = Callable[[Sequence[str]], str]


def _chooser(rng: np.random.Generator | None) -> Choose:
    if rng is None:
        return lambda options: options[0]
    return lambda options: options[int(rng.integers(len(options)))]


def noun_phrase(attributes: list[int], stated: list[bool], names: dict[str, list[str]],
                choose: Choose) -> str:
    """One object, A attribute indices and A stated flags -> "a small red circle at ..."."""
    value = {a: names[a][v] for a, v in zip(names, attributes, strict=False)}
    say = dict(zip(names, stated, strict=False))
    words = [choose(ARTICLES)]
    words += [value[a] for a in ("size", "colour") if say[a]]
    words.append(value["shape"] if say["shape"] else "shape")
    if say["position"]:
        words.append(choose(POSITION_WORDS).format(value["position"]))
    return " ".join(words)


def caption(objects: np.ndarray, stated: np.ndarray, relations: np.ndarray,
            names: dict[str, list[str]], rng: np.random.Generator | None = None) -> str:
    """The caption of one item.

    Args:
        objects: (K, A) attribute value indices, rows of -1 past the last object.
        stated: (K, A) bool, which attributes the caption states.
        relations: (K,) relation index per object: relations[k] = r says "object k - 1 is
            RELATIONS[r] object k" and is written between the two; -1 joins them with "and".
        names: the `Scenes.names` of the world.
        rng: draws the wording; None gives the canonical wording.
    """
    choose = _chooser(rng)
    objects, stated, relations = objects.tolist(), stated.tolist(), relations.tolist()
    count = sum(row[0] >= 0 for row in objects)
    text = noun_phrase(objects[0], stated[0], names, choose)
    for k in range(1, count):
        relation = relations[k]
        link = (choose(RELATION_WORDS[RELATIONS[relation]]) if relation >= 0
                else choose(CONJUNCTIONS))
        text += f" {link} {noun_phrase(objects[k], stated[k], names, choose)}"
    return choose(FRAMES).format(text)


def _alternatives(words) -> str:
    """A regex group matching any of `words`, longest first ("to the left of" before "left of")."""
    return "(" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + ")"


def parse_caption(text: str, names: dict[str, list[str]], k: int = 1
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The inverse of `caption` for any of its wordings: what a prompt states, per object.

    Args:
        text: a caption, or a prompt written in the same words (any case; the article may be
            "a", "an", "one" or left out).
        names: the `Scenes.names` of the world.
        k: rows of the result (the world's most objects); more objects than k is an error.

    Returns:
        objects (K, A) int64 value indices, -1 where the prompt does not state the attribute and
        on rows past the last object; stated (K, A) bool; relations (K,) int64 as in `caption`.

    Raises:
        ValueError: the text is not in the captions' grammar.
    """
    body = " ".join(text.strip().lower().split())
    for frame in sorted(FRAMES[1:], key=len, reverse=True):
        head, tail = frame.split("{}")
        if body.startswith(head) and body.endswith(tail) and len(body) > len(frame) - 2:
            body = body[len(head):len(body) - len(tail)]
            break
    relation_of = {w: r for r, name in enumerate(RELATIONS) for w in RELATION_WORDS[name]}
    parts = re.split(f" {_alternatives([*relation_of, *CONJUNCTIONS])} ", body)
    noun = re.compile(
        f"(?:{_alternatives([*ARTICLES, 'an'])} )?(?:{_alternatives(names['size'])} )?"
        f"(?:{_alternatives(names['colour'])} )?{_alternatives([*names['shape'], 'shape'])}"
        f"(?: {_alternatives(w.format('') for w in POSITION_WORDS)}"
        f"{_alternatives(names['position'])})?")
    count = (len(parts) + 1) // 2
    if count > k:
        raise ValueError(f"caption {text!r}: {count} objects, the world has at most {k}")
    objects = np.full((k, len(names) - ("relation" in names)), -1, dtype=np.int64)
    relations = np.full(k, -1, dtype=np.int64)
    for j, phrase in enumerate(parts[::2]):
        found = noun.fullmatch(phrase)
        if found is None:
            raise ValueError(f"caption {text!r}: cannot read {phrase!r}")
        _, size, colour, shape, _, position = found.groups()
        for a, value in enumerate((shape, colour, size, position)):
            attribute = ("shape", "colour", "size", "position")[a]
            if value is not None and value != "shape":
                objects[j, a] = names[attribute].index(value)
        if j > 0:
            relations[j] = relation_of.get(parts[2 * j - 1], -1)
    return objects, objects >= 0, relations
