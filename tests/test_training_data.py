"""Training meets its data: corrupt files stop a run with the file named, or are skipped."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from latentlab.cli import main
from latentlab.training.rundir import read_metrics


def image_folder(root, n=40, corrupt=()):
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(n // 2):
            path = root / cls / f"{i:03d}.png"
            if f"{cls}/{i:03d}.png" in corrupt:
                path.write_bytes(b"\x89PNG but not really")
            else:
                Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(path)
    return root


def train_args(data, out, *extra):
    return ["train-tokenizer", "--out", str(out), "--data.spec", f"folder:{data}",
            "--train.steps", "6", "--train.batch_size", "16", "--model.arch.channels", "8",
            "--train.warmup", "0", "--train.log_every", "3", *extra]


@pytest.mark.parametrize("workers", ["0", "2"])
def test_corrupt_file_stops_training_naming_it(tmp_path, capsys, workers):
    data = image_folder(tmp_path / "imgs", corrupt={"b/003.png"})
    code = main(train_args(data, tmp_path / "run", "--data.num_workers", workers))
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "b/003.png" in err and "Traceback" not in err


def test_skip_corrupt_counts_and_continues(tmp_path, capsys):
    data = image_folder(tmp_path / "imgs", corrupt={"a/001.png", "b/004.png"})
    with pytest.warns(UserWarning, match="skipping corrupt image"):
        code = main(train_args(data, tmp_path / "run", "--data.skip_corrupt", "true"))
    assert code == 0, capsys.readouterr().err
    skipped = [r["data/skipped"] for r in read_metrics(tmp_path / "run") if "data/skipped" in r]
    assert skipped and sum(skipped) > 0
