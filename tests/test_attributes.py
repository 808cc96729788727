"""Prompt adherence: the scoring rules on hand-made readings, and the attribute judge on real
single-object shapes (held-out accuracy, adherence of real images to their own and to shuffled
prompts, caching)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from latentlab.data import load_dataset
from latentlab.data.base import Scenes
from latentlab.evaluation.adherence import score, summarise, wilson_interval
from latentlab.evaluation.attributes import (
    NAME,
    AttributeJudgeConfig,
    adherence,
    as_images,
    attribute_judge,
    cell_targets,
    occupied_cells,
    prompt_adherence,
    read_objects,
)

NAMES = {"shape": ["circle", "square", "triangle"], "colour": ["red", "green", "blue"],
         "size": ["small", "large"], "position": [f"cell {i}" for i in range(9)],
         "relation": ["left of", "right of", "above", "below"]}
CIRCLE, SQUARE, RED, BLUE, LEFT_OF, ABOVE = 0, 1, 0, 2, 0, 2


def scenes(objects, stated, relations) -> Scenes:
    """One item per row of `objects` (K, 4) lists, padded with -1 rows to K = 3."""
    o = np.full((len(objects), 3, 4), -1, dtype=np.int64)
    s = np.zeros((len(objects), 3, 4), dtype=bool)
    r = np.full((len(objects), 3), -1, dtype=np.int64)
    for i, (obj, st, rel) in enumerate(zip(objects, stated, relations, strict=True)):
        o[i, :len(obj)], s[i, :len(st)], r[i, :len(rel)] = obj, st, rel
    return Scenes(o, s, r, NAMES)


def read(*rows) -> np.ndarray:
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


ONE = scenes([[[CIRCLE, RED, 1, 4]]], [[[True, True, False, True]]], [[-1]])


def test_a_single_object_is_right_on_its_stated_attributes_only():
    right = score([read([CIRCLE, RED, 0, 4])], ONE)  # size is wrong but not stated
    assert right.all_correct.tolist() == [True] and right.right.tolist() == [[1, 1, 0, 1]]
    wrong = score([read([CIRCLE, BLUE, 1, 5])], ONE)
    assert wrong.all_correct.tolist() == [False] and wrong.right.tolist() == [[1, 0, 0, 0]]
    nothing = score([read()], ONE)
    assert nothing.right.tolist() == [[0, 0, 0, 0]] and not nothing.all_correct[0]
    # the right object plus a stray one: every attribute right, yet one object too many
    extra = score([read([SQUARE, BLUE, 0, 0], [CIRCLE, RED, 1, 4])], ONE)
    assert extra.right.tolist() == [[1, 1, 0, 1]] and not extra.all_correct[0]


# "a red circle left of a blue square" (`Scenes.relations`: relation 1 says object 0 is left of
# object 1); positions unstated
PAIR = scenes([[[CIRCLE, RED, 0, 0], [SQUARE, BLUE, 0, 0]]],
              [[[True, True, False, False], [True, True, False, False]]], [[-1, LEFT_OF]])


def test_a_relation_is_checked_on_the_cells_of_the_matched_pair_in_any_reading_order():
    square_left = score([read([SQUARE, BLUE, 0, 5], [CIRCLE, RED, 0, 3])], PAIR)
    assert square_left.relations_right.tolist() == [1] and square_left.all_correct[0]
    assert square_left.right.tolist() == [[2, 2, 0, 0]]
    square_right = score([read([CIRCLE, RED, 0, 5], [SQUARE, BLUE, 0, 3])], PAIR)
    assert square_right.relations_right.tolist() == [0] and not square_right.all_correct[0]
    same_column = score([read([SQUARE, BLUE, 0, 1], [CIRCLE, RED, 0, 7])], PAIR)
    assert same_column.relations_right.tolist() == [0]
    above = scenes([[[CIRCLE, RED, 0, 0], [SQUARE, BLUE, 0, 0]]],
                   [[[True, True, False, False]] * 2], [[-1, ABOVE]])
    assert score([read([SQUARE, BLUE, 0, 7], [CIRCLE, RED, 0, 1])], above).all_correct[0]


def test_matching_picks_the_assignment_with_most_attributes_right():
    # a green circle decoy: the blue square must still be matched to object 1
    got = score([read([CIRCLE, 1, 0, 4], [SQUARE, BLUE, 0, 5], [CIRCLE, RED, 0, 3])], PAIR)
    assert got.right.tolist() == [[2, 2, 0, 0]] and got.relations_right.tolist() == [1]
    assert not got.all_correct[0]  # three objects read for two
    half = score([read([SQUARE, BLUE, 0, 5])], PAIR)  # one object read: object 1, alone
    assert half.right.tolist() == [[1, 1, 0, 0]] and half.relations_right.tolist() == [0]


def test_summary_counts_stated_attributes_with_a_wilson_interval_and_a_mask():
    both = scenes([[[CIRCLE, RED, 1, 4]]] * 2, [[[True, True, False, True]]] * 2, [[-1]] * 2)
    scores = score([read([CIRCLE, RED, 0, 4]), read([SQUARE, RED, 0, 4])], both)
    out = summarise(scores)
    assert out["accuracy/shape"] == 0.5 and out["accuracy/colour"] == 1.0
    assert "accuracy/size" not in out and "accuracy/relation" not in out
    assert out["all_correct"] == 0.5 and out["n"] == 2
    assert (out["all_correct/low"], out["all_correct/high"]) == wilson_interval(1, 2)
    assert summarise(scores, np.array([False, True]))["all_correct"] == 0.0
    assert summarise(score([read([SQUARE, BLUE, 0, 5], [CIRCLE, RED, 0, 3])], PAIR))[
        "accuracy/relation"] == 1.0


def test_wilson_interval_matches_known_values():
    low, high = wilson_interval(5, 10)
    assert abs(low - 0.2366) < 1e-4 and abs(high - 0.7634) < 1e-4
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and abs(high - 0.2775) < 1e-4


def test_cell_targets_put_each_object_in_its_cell():
    target = cell_targets(PAIR)  # both objects at cell 0: the later one wins
    assert target.shape == (1, 9, 3) and target[0, 0].tolist() == [SQUARE, BLUE, 0]
    assert (target[0, 1:] == -1).all()
    assert cell_targets(ONE)[0, 4].tolist() == [CIRCLE, RED, 1]


def test_an_object_shared_by_two_cells_is_read_once():
    p = torch.zeros(3, 9)
    p[0, [4, 5]] = torch.tensor([0.45, 0.4])  # on the boundary of cells 4 and 5
    p[1, [0, 8]] = torch.tensor([0.9, 0.8])  # two objects
    p[2, 3] = 0.3  # nothing
    cells = occupied_cells(p)
    assert cells[0].nonzero().flatten().tolist() == [4]
    assert cells[1].nonzero().flatten().tolist() == [0, 8] and not cells[2].any()


@pytest.fixture(scope="module")
def judge_cache(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "feature-cache"


@pytest.fixture(scope="module")
def shapes_judge(judge_cache):
    return attribute_judge("shapes", judge_cache)


@pytest.fixture(scope="module")
def shapes_test():
    data = load_dataset("shapes", "test")
    return data.__getitems__(list(range(len(data)))).x, data.scenes


@pytest.mark.slow
def test_the_judge_reads_single_object_shapes_at_95_percent_held_out(shapes_judge,
                                                                     judge_cache):
    acc = shapes_judge.accuracy
    assert min(acc["shape"], acc["colour"], acc["position"], acc["size"]) >= 0.95, acc
    [record] = list((judge_cache / "features").glob(f"*/{NAME}.json"))
    assert json.loads(record.read_text())["accuracy"] == acc


@pytest.mark.slow
def test_real_images_adhere_to_their_own_prompts_and_not_to_shuffled_ones(shapes_judge,
                                                                          shapes_test):
    x, truth = shapes_test
    own = adherence(shapes_judge, x, truth)
    assert own["all_correct"] >= 0.9 and own["accuracy/colour"] >= 0.95, own
    shuffled = truth.subset(np.random.default_rng(0).permutation(len(truth)))
    other = adherence(shapes_judge, x, shuffled)
    # chance: colour 1/8, shape 1/3, position about 1/9, all three about 1/216
    assert other["all_correct"] < 0.05 and other["accuracy/colour"] < 0.25, other


@pytest.mark.slow
def test_a_cached_judge_is_loaded_not_retrained(shapes_judge, shapes_test, judge_cache):
    again = attribute_judge("shapes", judge_cache)
    x, truth = shapes_test
    assert again is not shapes_judge and again.accuracy == shapes_judge.accuracy
    for a, b in zip(read_objects(again, x[:64]), read_objects(shapes_judge, x[:64]),
                    strict=True):
        assert np.array_equal(a, b)
    # the entry point: uint8 samples in the samples.npz layout, a held-out mask
    images = torch.from_numpy(np.ascontiguousarray(
        ((x[:64] + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()))
    assert torch.allclose(as_images(images), x[:64], atol=1e-6)
    out = prompt_adherence(images, truth.subset(slice(0, 64)), "shapes",
                           mask=np.arange(64) < 16, cache_dir=judge_cache)
    assert out["n"] == 64 and out["heldout/n"] == 16 and out["judge/shape"] == again.accuracy[
        "shape"]


def test_a_changed_config_is_retrained_not_loaded(tmp_path):
    cheap = AttributeJudgeConfig(width=2, epochs=0, min_steps=1, max_steps=1)
    first = attribute_judge("shapes:n=64,size=16", tmp_path, cheap)
    assert set(first.accuracy) == {"shape", "colour", "size", "position", "count"}
    again = attribute_judge("shapes:n=64,size=16", tmp_path, cheap)
    assert torch.equal(again.head.weight, first.head.weight)
    other = attribute_judge("shapes:n=64,size=16", tmp_path, AttributeJudgeConfig(
        width=2, epochs=0, min_steps=1, max_steps=1, seed=5))
    assert not torch.equal(other.head.weight, first.head.weight)
