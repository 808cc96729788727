"""Scoring the objects read from generated images against the scenes of their prompts.

No network here: `score` takes the objects a judge read (`attributes.read_objects`) and the
prompts' `Scenes`, so the rules can be checked by hand. They follow GenEval (Ghosh et al.
2023): the prompt's objects are matched to the objects read by trying every assignment (K <= 3)
and keeping the one with the most stated attributes and relations right; an attribute counts
only where the caption states it; a relation between object k and object k - 1 is checked on
the grid cells of the pair ("left of": object k - 1's column is left of object k's); an image is
all-correct when every stated attribute and relation is right and as many objects are read as
the prompt names.

Legend: N items, K prompt objects, P objects read, A attributes per object.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from latentlab.data.base import Scenes
from latentlab.errors import DataError

POSITION = "position"
Z95 = 1.959964  # the normal quantile of a two-sided 95 % interval
# relation name -> test on ((row, col) of object k - 1, (row, col) of object k)
RELATIONS = {
    "left of": lambda a, b: a[1] < b[1],
    "right of": lambda a, b: a[1] > b[1],
    "above": lambda a, b: a[0] < b[0],
    "below": lambda a, b: a[0] > b[0],
}


@dataclass(frozen=True)
class Scores:
    """Per item, how the objects read from its image agree with its prompt.

    Attributes:
        right: (N, A) int64, stated attributes of the prompt's objects read right.
        stated: (N, A) int64, attributes the prompt states.
        relations_right: (N,) int64, stated relations that hold between the matched objects.
        relations: (N,) int64, relations the prompt states.
        all_correct: (N,) bool, everything right and the number of objects read equal.
        names: the attribute of each column.
    """

    right: np.ndarray
    stated: np.ndarray
    relations_right: np.ndarray
    relations: np.ndarray
    all_correct: np.ndarray
    names: list[str]


def columns(names: dict[str, list[str]]) -> list[str]:
    """The attributes that are columns of `Scenes.objects` (every one but the relation)."""
    return [a for a in names if a != "relation"]


def _relation_tests(scenes: Scenes) -> list:
    tests = []
    for name in scenes.names.get("relation", []):
        if name not in RELATIONS:
            raise DataError(f"relation {name!r}: no geometric test (known: {list(RELATIONS)})")
        tests.append(RELATIONS[name])
    return tests


def match(objects: np.ndarray, stated: np.ndarray, relations: np.ndarray, read: np.ndarray,
          position: int, side: int, tests: list) -> tuple[np.ndarray, int]:
    """The best assignment of one prompt's objects (K, A) to the objects read (P, A).

    Args:
        objects, stated, relations: the prompt's objects, what it states, its relations (K,).
        read: the objects read, position column `position` holding grid cells.
        side: grid cells per row; tests: relation index -> geometric test.

    Returns:
        Stated attributes read right per column (A,), and relations that hold.
    """
    k, p = len(objects), len(read)
    best, best_total = (np.zeros(objects.shape[1], dtype=np.int64), 0), -1
    for chosen in itertools.combinations(range(k), min(k, p)):
        for picked in itertools.permutations(range(p), len(chosen)):
            assigned = np.full(k, -1)
            assigned[list(chosen)] = picked
            right = np.zeros(objects.shape[1], dtype=np.int64)
            for i in np.nonzero(assigned >= 0)[0]:
                right += stated[i] & (read[assigned[i]] == objects[i])
            holds = 0
            for i in np.nonzero(relations >= 0)[0]:
                j, q = assigned[i], assigned[i - 1]
                if i > 0 and j >= 0 and q >= 0:
                    cell, other = read[j, position], read[q, position]
                    # "object k - 1 is <relation> object k" (`Scenes.relations`)
                    holds += bool(tests[relations[i]](divmod(other, side), divmod(cell, side)))
            if right.sum() + holds > best_total:
                best, best_total = (right, holds), right.sum() + holds
    return best


def score(read: list[np.ndarray], scenes: Scenes) -> Scores:
    """Score the objects read from N images (each (P_i, A) in `scenes` column order) against
    the N prompts' `scenes`."""
    assert len(read) == len(scenes), f"{len(read)} images for {len(scenes)} scenes"
    names = columns(scenes.names)
    assert len(names) == scenes.objects.shape[2], f"scene columns {names} do not match objects"
    position, side = names.index(POSITION), math.isqrt(len(scenes.names[POSITION]))
    tests = _relation_tests(scenes)
    n, a = len(scenes), len(names)
    right, stated = np.zeros((n, a), dtype=np.int64), np.zeros((n, a), dtype=np.int64)
    holds, relations = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    all_correct = np.zeros(n, dtype=bool)
    for i in range(n):
        present = scenes.objects[i, :, 0] >= 0
        objects, says = scenes.objects[i, present], scenes.stated[i, present]
        rel = scenes.relations[i, present]
        right[i], holds[i] = match(objects, says, rel, read[i], position, side, tests)
        stated[i], relations[i] = says.sum(0), (rel >= 0).sum()
        all_correct[i] = (len(read[i]) == len(objects) and right[i].sum() == stated[i].sum()
                          and holds[i] == relations[i])
    return Scores(right, stated, holds, relations, all_correct, names)


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95 % by default); NaNs when n == 0."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def summarise(scores: Scores, mask: np.ndarray | None = None) -> dict[str, float]:
    """Accuracy per stated attribute ("accuracy/<name>", only attributes some prompt states),
    "accuracy/relation" (where any prompt states one), "all_correct" with its 95 % Wilson
    interval ("all_correct/low", "all_correct/high"), and "n", over the items in `mask`
    (N,) bool (default: all)."""
    keep = np.ones(len(scores.all_correct), dtype=bool) if mask is None else np.asarray(mask)
    assert keep.shape == scores.all_correct.shape, "mask must be (N,) bool"
    out = {}
    for i, name in enumerate(scores.names):
        stated = scores.stated[keep, i].sum()
        if stated:
            out[f"accuracy/{name}"] = float(scores.right[keep, i].sum() / stated)
    if scores.relations[keep].sum():
        out["accuracy/relation"] = float(scores.relations_right[keep].sum()
                                         / scores.relations[keep].sum())
    n, good = int(keep.sum()), int(scores.all_correct[keep].sum())
    out["all_correct"] = good / n if n else math.nan
    out["all_correct/low"], out["all_correct/high"] = wilson_interval(good, n)
    out["n"] = n
    return out
