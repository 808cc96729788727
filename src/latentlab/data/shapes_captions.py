"""The caption of a `shapes` item, written from its structured attributes (one row of `Scenes`).

Without a phrasing generator the wording is canonical: "a red circle at the top left" (the
single-object world, which states no size), "a small red circle left of a large blue square and
a small green star at the bottom" (the compositional world). With one, each choice below (article,
position wording, relation synonym, conjunction, frame) is drawn per item, so the same content is
said in several ways; the canonical choice is always the first of each list.

Legend: K objects per item at most, A attributes per object.
"""

from __future__ import annotations

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
