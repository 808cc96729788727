"""Prompt adherence of a text-conditioned generator's samples: each prompt is read back into
the attributes it states (`data.shapes_captions.parse_caption`), the attribute judge of the
dataset reads the sample (`evaluation.attributes`), and the two are compared attribute by
attribute, GenEval style; the same figures over the prompts that name a held-out combination
(a colour-shape pair the training split never shows) measure compositional generalisation.

Legend: N samples, K objects per prompt at most, A attributes per object.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from latentlab.data import load_dataset
from latentlab.data.base import Scenes
from latentlab.data.shapes_captions import parse_caption
from latentlab.errors import UserError
from latentlab.evaluation.attributes import prompt_adherence

SHAPE, COLOUR = 0, 1  # columns of Scenes.objects


def read_prompts(path: str | os.PathLike) -> np.ndarray | None:
    """The `prompts` array of a samples file, or None when it has none."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return f["prompts"].astype(str) if "prompts" in f else None
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a samples file ({e})") from None


def held_out_pairs(spec: str) -> set[tuple[int, int]]:
    """(shape, colour) pairs of dataset `spec` that only its test split shows: the
    combinations its holdout option keeps from training."""
    def pairs(scenes: Scenes, rows: np.ndarray) -> set[tuple[int, int]]:
        objects = scenes.objects[rows].reshape(-1, scenes.objects.shape[-1])
        return {(int(s), int(c)) for s, c in objects[objects[:, SHAPE] >= 0][:, :2]}

    train, test = (load_dataset(spec, split).scenes for split in ("train", "test"))
    return pairs(test, test.held_out) - pairs(train, np.ones(len(train), dtype=bool))


def prompt_scenes(prompts: np.ndarray, names: dict[str, list[str]], k: int
                  ) -> tuple[Scenes, np.ndarray]:
    """The scenes the prompts state, and (N,) bool: which prompts parse (the others are not
    in the dataset's caption grammar and are not scored)."""
    rows, parsed = [], np.zeros(len(prompts), dtype=bool)
    for i, prompt in enumerate(prompts):
        try:
            rows.append(parse_caption(str(prompt), names, k))
            parsed[i] = True
        except ValueError:
            pass
    if not rows:
        empty = np.zeros((0, k, len(names) - ("relation" in names)), dtype=np.int64)
        return Scenes(empty, empty.astype(bool), np.zeros((0, k), np.int64), names), parsed
    objects, stated, relations = (np.stack(part) for part in zip(*rows, strict=True))
    return Scenes(objects, stated, relations, names), parsed


def adherence_figures(spec: str, images: torch.Tensor, prompts: np.ndarray,
                      cache_dir: str | os.PathLike | None = None) -> dict[str, float]:
    """Prompt adherence of generated images (N, C, H, W) in [-1, 1] to their prompts, for
    dataset `spec` (one with structured attributes: shapes); {} for data without them.

    Returns the figures of `evaluation.attributes.prompt_adherence` under "adherence/", the
    same over held-out combinations under "adherence/heldout/" when the data has any, and
    "adherence/unscored", the prompts outside the caption grammar.
    """
    test = load_dataset(spec, "test")
    if test.scenes is None:
        return {}
    scenes, parsed = prompt_scenes(prompts, test.scenes.names, test.scenes.objects.shape[1])
    if not parsed.any():
        return {"adherence/unscored": float(len(prompts))}
    pairs = held_out_pairs(spec)
    mask = None
    if pairs:
        objects = scenes.objects
        mask = np.array([any((int(s), int(c)) in pairs for s, c in row[:, :2] if s >= 0)
                         for row in objects])
    figures = prompt_adherence(images[torch.as_tensor(parsed)], scenes, spec, mask=mask,
                               cache_dir=cache_dir)
    return {f"adherence/{k}": v for k, v in figures.items()} | {
        "adherence/unscored": float((~parsed).sum())}
