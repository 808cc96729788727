"""Spec strings and `load_dataset`: parsing, typed options, one-line errors, the kind registry."""

import inspect

import numpy as np
import pytest

from latentlab.data import KINDS, LOADERS, load_dataset, parse_spec
from latentlab.errors import DataError


@pytest.fixture
def disk(tmp_path):
    """A directory of each on-disk kind (only the files spec inference looks at)."""
    (tmp_path / "imgs").mkdir()
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"")
    (tmp_path / "cifar").mkdir()
    (tmp_path / "cifar" / "data_batch_1.bin").write_bytes(b"")
    np.savez(tmp_path / "data.npz", images=np.zeros((2, 4, 4), np.uint8))
    (tmp_path / "notes.txt").write_text("hi")
    return tmp_path


def test_builtin_specs_parse_to_typed_options():
    spec = parse_spec("mixture:k=8,d=10,std=0.5,n=2000,seed=0")
    assert spec.kind == "mixture"
    assert spec.options == {"k": 8, "d": 10, "std": 0.5, "n": 2000, "seed": 0}
    assert isinstance(spec.options["k"], int) and isinstance(spec.options["std"], float)
    assert parse_spec("digits").options == {}
    assert parse_spec("shapes:size=16").options == {
        "size": 16, "n": 4000, "seed": 0, "objects": 1, "shapes": 3, "phrasings": False,
        "holdout": frozenset()}
    assert parse_spec("faces").options == {"size": 32}
    assert parse_spec(" mixture : k = 3 ").options["k"] == 3  # spaces from YAML are harmless


def test_on_disk_specs_take_a_bare_or_named_path(disk):
    spec = parse_spec(f"folder:{disk / 'imgs'},resize=32,channels=1")
    assert spec.kind == "folder" and spec.options["path"] == disk / "imgs"
    assert spec.options["resize"] == (32, 32) and spec.options["channels"] == 1
    assert parse_spec(f"folder:path={disk / 'imgs'},resize=16x24").options["resize"] == (16, 24)
    assert parse_spec(f"npz:{disk / 'data.npz'}").options["test_fraction"] == 0.1
    assert parse_spec(f"mnist:{disk / 'mnist'}").kind == "mnist"
    assert parse_spec(f"cifar10:{disk / 'cifar'}").kind == "cifar10"


@pytest.mark.parametrize("name, kind", [("data.npz", "npz"), ("imgs", "folder"),
                                        ("mnist", "mnist"), ("cifar", "cifar10")])
def test_bare_paths_infer_their_kind(disk, name, kind):
    spec = parse_spec(str(disk / name))
    assert spec.kind == kind and spec.options["path"] == disk / name


@pytest.mark.parametrize("spec, message", [
    ("mixture:k=x", "dataset spec 'mixture:k=x': option 'k' must be a positive integer, got 'x'"),
    ("foo", "dataset spec 'foo': unknown kind 'foo' (known: digits, mixture, shapes, faces, "
            "folder, npz, mnist, cifar10)"),
    ("mixture:kk=3", "unknown option 'kk' for kind 'mixture' (known: k, d, std, n, seed)"),
    ("digits:size=3", "unknown option 'size' for kind 'digits' (known: none)"),
    ("mixture:k=3,k=4", "option 'k' is given twice"),
    ("mixture:k=3,", "empty option"),
    ("mixture:3", "expected key=value, got '3'"),
    ("mixture:d=1", "option 'd' must be an integer >= 2, got '1'"),
    ("mixture:std=-1", "option 'std' must be a non-negative number"),
    ("mixture:std=nan", "option 'std' must be a non-negative number"),
    ("mixture:std=inf", "option 'std' must be a non-negative number"),
    ("shapes:seed=-1", "option 'seed' must be a non-negative integer"),
    ("folder:", "option 'path' is required"),
    ("folder:/no/such/dir", "option 'path' must be an existing directory, got '/no/such/dir'"),
    ("npz:/no/such.npz", "option 'path' must be an existing file"),
    ("/no/such/data.npz", "dataset spec '/no/such/data.npz': no such file or directory"),
])
def test_bad_specs_raise_one_line_naming_the_problem(spec, message):
    with pytest.raises(DataError) as error:
        parse_spec(spec)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("options, message", [
    ("resize=0", "option 'resize' must be N or HxW"),
    ("resize=3x4x5", "option 'resize' must be N or HxW"),
    ("channels=2", "option 'channels' must be 1 or 3, got '2'"),
    ("test_fraction=1", "option 'test_fraction' must be a number strictly between 0 and 1"),
])
def test_bad_folder_options(disk, options, message):
    with pytest.raises(DataError, match=message):
        parse_spec(f"folder:{disk / 'imgs'},{options}")


def test_a_file_of_unknown_kind_asks_for_one(disk):
    with pytest.raises(DataError, match="cannot tell the kind"):
        parse_spec(str(disk / "notes.txt"))


def test_every_kind_has_a_loader_taking_exactly_its_options():
    assert list(LOADERS) == list(KINDS)
    for kind, loader in LOADERS.items():
        params = set(inspect.signature(loader).parameters) - {"split", "name", "skip_corrupt"}
        assert params == set(KINDS[kind]), kind


def test_load_dataset_names_the_split_and_rejects_unknown_splits():
    train, test = load_dataset("digits"), load_dataset("digits", "test")
    assert train.name == "digits[train]" and test.name == "digits[test]"
    assert train.fingerprint() != test.fingerprint()
    with pytest.raises(DataError, match="unknown split 'val'"):
        load_dataset("digits", "val")
    with pytest.raises(DataError, match="unknown kind"):
        load_dataset("digitz")
