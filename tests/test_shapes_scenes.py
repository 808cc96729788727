"""The shapes worlds' structured scenes: the single-object world pinned as it was, the
compositional world's layout, captions and relations, phrasings, and held-out combinations."""

import hashlib
import re

import numpy as np
import pytest
import torch

from latentlab.data import load_dataset
from latentlab.data.base import Scenes
from latentlab.data.shapes import CELLS, PALETTE, SHAPES, SHAPES_ALL, SIZES
from latentlab.data.shapes_captions import RELATION_WORDS, RELATIONS, parse_caption
from latentlab.errors import DataError

MULTI = "shapes:size=48,n=240,seed=2,objects=3,shapes=6"


def test_single_object_items_are_unchanged():
    train = load_dataset("shapes:size=32,n=8,seed=3")
    test = load_dataset("shapes:size=32,n=8,seed=3", "test")
    assert [train.caption(i) for i in range(4)] == [
        "a red triangle at the right", "a cyan circle at the center",
        "a magenta triangle at the center", "a red circle at the bottom right"]
    assert [test.caption(i) for i in range(2)] == [
        "a blue triangle at the center", "a cyan square at the top"]
    assert train.labels[:4].tolist() == [2, 0, 2, 0]
    assert train.scenes.objects[:4, 0].tolist() == [[2, 0, 0, 5], [0, 5, 0, 4], [2, 4, 0, 4],
                                                    [0, 0, 1, 8]]
    assert train.scenes.names == {"shape": SHAPES, "colour": list(PALETTE), "size": SIZES,
                                  "position": CELLS}
    # the pixels as drawn before the compositional world existed (PIL 4x supersampling)
    assert hashlib.sha256(train.data[:4].numpy().tobytes()).hexdigest()[:16] == "33b666f841ff4d87"
    assert hashlib.sha256(test.data[:2].numpy().tobytes()).hexdigest()[:16] == "c110748c1a3ef33c"
    assert not train.scenes.held_out.any()


def _objects(scenes: Scenes, i: int) -> np.ndarray:
    """(n, A) rows of the objects item i really has."""
    return scenes.objects[i][scenes.objects[i][:, 0] >= 0]


def test_multi_object_scenes_fill_distinct_cells_with_their_own_colour():
    data = load_dataset(MULTI)
    scenes, side = data.scenes, 48 // 3
    assert scenes.objects.shape == (240, 3, 4) and data.class_names == SHAPES_ALL
    assert scenes.names["relation"] == RELATIONS and scenes.names["shape"] == SHAPES_ALL
    counts = (scenes.objects[:, :, 0] >= 0).sum(1)
    assert set(counts.tolist()) == {1, 2, 3}
    assert set(scenes.objects[:, :, 0].ravel().tolist()) == set(range(-1, 6))
    assert torch.equal(data.labels, torch.as_tensor(scenes.objects[:, 0, 0]))
    for i in range(len(data)):
        objects = _objects(scenes, i)
        assert len(set(objects[:, 3].tolist())) == len(objects), i  # distinct cells
        lit = data.data[i].numpy().max(axis=0) > 0  # (S, S)
        for cell in range(9):
            row, col = divmod(cell, 3)
            block = data.data[i, :, row * side:(row + 1) * side, col * side:(col + 1) * side]
            here = objects[objects[:, 3] == cell]
            if len(here) == 0:  # nothing spills out of its own cell
                assert not lit[row * side:(row + 1) * side, col * side:(col + 1) * side].any()
                continue
            colours = {tuple(p) for p in block.reshape(3, -1).T.tolist()} & set(PALETTE.values())
            assert colours == {list(PALETTE.values())[here[0, 1]]}, (i, cell)  # fully covered


def test_multi_object_sizes_are_told_apart_by_area():
    data = load_dataset("shapes:size=48,n=200,seed=5,objects=2")
    areas = {0: [], 1: []}
    for i in range(len(data)):
        objects = _objects(data.scenes, i)
        if len(objects) == 1 and SHAPES_ALL[objects[0, 0]] == "square":
            areas[int(objects[0, 2])].append(int((data.data[i].max(0).values > 127).sum()))
    assert areas[0] and areas[1] and max(areas[0]) < min(areas[1])


def test_captions_state_what_the_scene_records_and_relations_hold():
    data = load_dataset(MULTI)
    scenes, seen = data.scenes, set()
    for i in range(len(data)):
        text, objects = data.caption(i), _objects(scenes, i)
        phrases = re.split(" (?:and|" + "|".join(RELATIONS) + ") ", text)
        assert len(phrases) == len(objects), text
        for phrase, (shape, colour, size, cell), says in zip(phrases, objects, scenes.stated[i],
                                                              strict=False):
            assert phrase.startswith(f"a {SIZES[size]} {list(PALETTE)[colour]} "
                                     f"{SHAPES_ALL[shape]}"), text
            assert (f" at the {CELLS[cell]}" in phrase) == bool(says[3]), text
        for k in range(1, len(objects)):
            relation = scenes.relations[i, k]
            if relation < 0:
                continue
            seen.add(int(relation))
            assert f" {RELATIONS[relation]} " in text
            (ra, ca), (rb, cb) = divmod(objects[k - 1, 3], 3), divmod(objects[k, 3], 3)
            holds = {"left of": ca < cb, "right of": ca > cb, "above": ra < rb, "below": ra > rb}
            assert holds[RELATIONS[relation]], (text, objects[:, 3])
    assert seen == {0, 1, 2, 3}
    assert (scenes.relations[:, 0] == -1).all()


def test_items_are_pure_functions_and_phrasings_keep_the_content():
    a = load_dataset("shapes:size=24,n=10,seed=4,objects=3")
    b = load_dataset("shapes:size=24,n=20,seed=4,objects=3")
    assert torch.equal(a.data, b.data[:10]) and a.captions == b.captions[:10]
    assert np.array_equal(a.scenes.objects, b.scenes.objects[:10])
    worded = load_dataset("shapes:size=24,n=20,seed=4,objects=3,phrasings=on")
    assert torch.equal(worded.data, b.data)
    assert np.array_equal(worded.scenes.objects, b.scenes.objects)
    assert np.array_equal(worded.scenes.relations, b.scenes.relations)
    assert sum(x != y for x, y in zip(worded.captions, b.captions, strict=True)) >= 10
    again = load_dataset("shapes:size=24,n=20,seed=4,objects=3,phrasings=on")
    assert again.captions == worded.captions


def test_phrasings_vary_the_words_but_name_every_object():
    data = load_dataset("shapes:size=16,n=200,seed=1,objects=3,shapes=6,phrasings=on")
    starts = {c.split()[0] for c in data.captions}
    assert {"a", "one", "there", "an"} <= starts
    synonyms = [w for words in RELATION_WORDS.values() for w in words[1:]]
    assert any(w in c for c in data.captions for w in synonyms)
    for i, text in enumerate(data.captions):
        for shape, colour, size, _ in _objects(data.scenes, i):
            assert f"{SIZES[size]} {list(PALETTE)[colour]} {SHAPES_ALL[shape]}" in text, text


@pytest.mark.parametrize("world", ["objects=1", "objects=3,shapes=6"])
def test_holdout_keeps_held_out_pairs_out_of_training_only(world):
    spec = f"shapes:size=16,n=400,seed=0,{world},holdout=green triangle/red-circle"
    held = {(list(PALETTE).index(c), SHAPES_ALL.index(s))
            for c, s in [("green", "triangle"), ("red", "circle")]}

    def contains(scenes: Scenes) -> np.ndarray:
        pairs = scenes.objects[..., [1, 0]]  # (N, K, 2) colour, shape
        return np.array([any(tuple(p) in held for p in item.tolist()) for item in pairs])

    train, test = load_dataset(spec), load_dataset(spec, "test")
    assert not contains(train.scenes).any() and not train.scenes.held_out.any()
    assert np.array_equal(test.scenes.held_out, contains(test.scenes))
    assert test.scenes.held_out.sum() >= 3
    free = load_dataset(spec.split(",holdout")[0], "test")  # the test split is not redrawn
    assert torch.equal(free.data, test.data) and free.captions == test.captions
    plain = load_dataset(spec.split(",holdout")[0])
    keep = ~contains(plain.scenes)  # train items without a held-out pair are drawn as before
    assert torch.equal(plain.data[torch.as_tensor(keep)], train.data[torch.as_tensor(keep)])
    assert np.array_equal(test.scenes.subset([1, 0]).held_out, test.scenes.held_out[[1, 0]])


@pytest.mark.parametrize(("spec", "message"), [
    ("shapes:holdout=green hexagon", "option 'holdout' must be colour-shape pairs"),
    ("shapes:holdout=green", "option 'holdout' must be colour-shape pairs"),
    ("shapes:holdout=green star", "holdout names 'star', not among shapes=3"),
    ("shapes:objects=4", "option 'objects' must be an integer from 1 to 3"),
    ("shapes:shapes=7", "option 'shapes' must be an integer from 3 to 6"),
    ("shapes:phrasings=yes", "option 'phrasings' must be on or off"),
])
def test_bad_world_options_are_one_line_errors(spec, message):
    with pytest.raises(DataError, match=re.escape(message)) as error:
        load_dataset(spec.replace("shapes:", "shapes:n=4,size=8,"))
    assert "\n" not in str(error.value)


def test_scenes_default_to_nothing_held_out():
    scenes = Scenes(np.zeros((3, 1, 4), dtype=np.int64), np.ones((3, 1, 4), dtype=bool),
                    np.full((3, 1), -1), {"shape": ["circle"]})
    assert scenes.held_out.dtype == bool and scenes.held_out.shape == (3,)
    assert len(scenes.subset([0, 2]).held_out) == 2


def test_captioned_says_whether_captions_exist():
    assert load_dataset("shapes:size=8,n=4").captioned
    assert not load_dataset("digits").captioned


@pytest.mark.parametrize("spec", ["shapes:size=8,n=300,seed=6,objects=3,shapes=6,phrasings=on",
                                  "shapes:size=8,n=100,seed=6,phrasings=on",
                                  "shapes:size=8,n=100,seed=6,objects=2"])
def test_parse_caption_reads_every_wording_back(spec):
    data = load_dataset(spec)
    scenes, k = data.scenes, data.scenes.objects.shape[1]
    for i, text in enumerate(data.captions):
        objects, stated, relations = parse_caption(text, scenes.names, k)
        assert np.array_equal(stated, scenes.stated[i]), text
        assert np.array_equal(objects, np.where(stated, scenes.objects[i], -1)), text
        assert np.array_equal(relations, scenes.relations[i]), text


def test_parse_caption_takes_typed_prompts_and_rejects_others():
    names = load_dataset("shapes:size=8,n=4,objects=2").scenes.names
    objects, stated, relations = parse_caption("A large red circle left of an orange square",
                                               names, 2)
    assert objects.tolist() == [[0, 0, 1, -1], [1, 6, -1, -1]] and relations.tolist() == [-1, 0]
    assert stated.tolist() == [[True, True, True, False], [True, True, False, False]]
    assert parse_caption("red circle at the top left", names)[0].tolist() == [[0, 0, -1, 0]]
    for bad in ["a purple circle", "a red circle left of a square left of a star", ""]:
        with pytest.raises(ValueError, match="caption"):
            parse_caption(bad, names, 2)
