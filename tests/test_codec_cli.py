"""`latentlab train-codec`, `compress`, `decompress`: files, one-line errors, and decoding in
another process."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from latentlab import config as C
from latentlab.cli import main
from latentlab.codec import CodecModel, compress, decompress
from latentlab.codec.model import MANIFEST, manifest_for
from latentlab.generation.config import GeneratorRunConfig
from latentlab.generation.generator import Generator
from latentlab.io import write_json, write_text
from tests.test_codec import PRIOR, WHAT, digits, tiny_parts


def make_codec_run(root: Path, seed: int = 0) -> Path:
    """A codec run laid out as train-codec lays it out, holding the tiny test model."""
    tokenizer, prior = tiny_parts(seed=seed)
    tokenizer.save(root / "tokenizer-run" / "tokenizer")
    cfg = GeneratorRunConfig(tokenizer=str(root / "tokenizer-run"), generator=PRIOR)
    write_text(root / "prior-run" / "config.yaml", C.dump_yaml(cfg))
    Generator(cfg, WHAT, prior).save(root / "prior-run" / "generator")
    model = CodecModel.load(tokenizer=root / "tokenizer-run", prior=root / "prior-run")
    write_json(root / MANIFEST, manifest_for(model, "digits"))
    return root


@pytest.fixture
def files(tmp_path):
    """A codec run and three PNGs: two digits and an odd-sized grey image."""
    run = make_codec_run(tmp_path / "run")
    paths = []
    images = digits(2) + [np.random.default_rng(0).integers(0, 256, (19, 10, 1), np.uint8)]
    for name, image in zip(("one", "two", "odd size"), images, strict=True):
        paths.append(tmp_path / f"{name}.png")
        Image.fromarray(image[..., 0]).save(paths[-1])
    return run, paths


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("latentlab: error: ") and "\n" not in err, err
    return err


def test_compress_and_decompress_files(files, tmp_path, capsys):
    run, paths = files
    out, dest = tmp_path / "x.llc", tmp_path / "decoded"
    assert main(["compress", *map(str, paths), "-o", str(out), "--model", str(run)]) == 0
    assert main(["decompress", str(out), "-o", str(dest), "--model", str(run)]) == 0
    assert sorted(p.name for p in dest.iterdir()) == ["odd_size.png", "one.png", "two.png"]
    expected = decompress(CodecModel.load(run), out.read_bytes())
    for name, image in zip(expected.names, expected.images, strict=True):
        written = np.asarray(Image.open(dest / f"{name}.png"))
        np.testing.assert_array_equal(written, image[..., 0])
    assert np.asarray(Image.open(dest / "odd_size.png")).shape == (19, 10)
    assert "wrote 3 images" in capsys.readouterr().out

    # the pair given explicitly is the same model
    assert main(["decompress", str(out), "-o", str(dest), "--overwrite",
                 "--tokenizer", str(run / "tokenizer-run"), "--prior", str(run / "prior-run")]) == 0


def test_one_line_errors(files, tmp_path, capsys):
    run, paths = files
    out, dest = tmp_path / "x.llc", tmp_path / "decoded"
    main(["compress", *map(str, paths), "-o", str(out), "--model", str(run)])
    capsys.readouterr()
    (tmp_path / "cut.llc").write_bytes(out.read_bytes()[:-10])
    cases = [
        (["decompress", str(tmp_path / "cut.llc"), "-o", str(dest), "--model", str(run)],
         "truncated"),
        (["decompress", str(paths[0]), "-o", str(dest), "--model", str(run)],
         "not a latentlab codec file"),
        (["decompress", str(out), "-o", str(dest)], "needs its model"),
        (["compress", str(tmp_path / "missing.png"), "-o", str(out), "--model", str(run)],
         "no such image file"),
    ]
    other = make_codec_run(tmp_path / "other", seed=1)
    cases.append((["decompress", str(out), "-o", str(dest), "--model", str(other)],
                  f"made with model {CodecModel.load(run).fingerprint_hex}, but this model is "
                  f"{CodecModel.load(other).fingerprint_hex}"))
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in error_line(capsys)
    assert not dest.exists()  # nothing half-written

    assert main(["decompress", str(out), "-o", str(dest), "--model", str(run)]) == 0
    assert main(["decompress", str(out), "-o", str(dest), "--model", str(run)]) == 2
    assert "exists; pass --overwrite" in error_line(capsys)

    manifest = json.loads((run / MANIFEST).read_text())
    write_json(run / MANIFEST, manifest | {"fingerprint": "0" * 16})
    assert main(["decompress", str(out), "-o", str(dest), "--model", str(run)]) == 2
    assert "changed after train-codec" in error_line(capsys)


@pytest.mark.slow
def test_another_process_decodes_the_same_tokens_and_pixels(files, tmp_path):
    run, paths = files
    out = tmp_path / "x.llc"
    assert main(["compress", *map(str, paths), "-o", str(out), "--model", str(run)]) == 0
    here = decompress(CodecModel.load(run), out.read_bytes())
    cmd = [sys.executable, "-m", "latentlab", "decompress", str(out), "--model", str(run)]
    done = subprocess.run([*cmd, "-o", str(tmp_path / "a")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for name, image in zip(here.names, here.images, strict=True):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a" / f"{name}.png")),
                                      image[..., 0])
    # other thread settings: the prior runs on one thread, so its tables (and the tokens'
    # checksum) do not change; pixels come from the tokenizer's convolutions, not checked here
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([*cmd, "-o", str(tmp_path / "b")], capture_output=True, text=True,
                          env=env)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_train_codec_makes_a_run_with_an_unconditional_prior(tmp_path):
    from latentlab.codec.train import CodecRunConfig, train_codec
    from latentlab.errors import UserError

    cfg = CodecRunConfig()
    short = dict(steps=3, batch_size=16, warmup=1, eval_every=0, checkpoint_every=3, log_every=1)
    tok = dataclasses.replace(cfg.tokenizer, train=dataclasses.replace(cfg.tokenizer.train,
                                                                       **short))
    tok.model.arch = dataclasses.replace(tok.model.arch, channels=8)
    tok.model.bottleneck.codebook_size = 16
    prior = dataclasses.replace(cfg.prior, train=dataclasses.replace(cfg.prior.train, **short))
    prior.transformer = dataclasses.replace(prior.transformer, width=32, depth=1, heads=2)
    cfg = CodecRunConfig(tokenizer=tok, prior=prior)
    metrics = train_codec(cfg, tmp_path / "codec")

    run = tmp_path / "codec"
    assert Generator.load(run / "prior-run").what.num_classes == 0  # a codec knows no labels
    model = CodecModel.load(run)
    assert model.fingerprint_hex == metrics["fingerprint"]
    assert (model.vocab, model.grid, model.tile) == (16, (4, 4), (8, 8))
    images = digits(5)
    encoded = compress(model, images)
    assert torch.equal(decompress(model, encoded.data).tokens, encoded.tokens)
    with pytest.raises(UserError, match="already holds a run"):
        train_codec(cfg, run)
