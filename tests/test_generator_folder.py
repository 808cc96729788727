"""A generator describes itself: the folder `Generator.save` writes (and a `train-generator` run
keeps as RUN/generator/) loads alone; runs written before it held its configuration still load;
anything else is refused in one line naming the folder and what it lacks."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from latentlab import config as C
from latentlab.errors import CheckpointError
from latentlab.generation.config import GeneratorRunConfig
from latentlab.generation.generator import CONFIG, MODELLED, WEIGHTS, Generator
from latentlab.generation.models import Modelled, build_models
from latentlab.generation.sample import sample_to_file
from latentlab.generation.train import train_generator

from .conftest import run_main

# the config.yaml of a tiny flow run on the mixture, as today's main wrote it (2026-12-02)
MAIN_CONFIG = Path(__file__).parent / "fixtures" / "generator-run-main" / "config.yaml"
MIXTURE = Modelled((10,), "latents", 4)  # what that run models


def write_main_run(run: Path, seed: int = 0) -> torch.nn.Module:
    """A generator run laid out as main wrote it before generators held their config:
    RUN/config.yaml, RUN/generator/generator.safetensors and RUN/generator/modelled.json."""
    (run / "generator").mkdir(parents=True)
    shutil.copy(MAIN_CONFIG, run / "config.yaml")
    torch.manual_seed(seed)
    network = build_models(C.load(GeneratorRunConfig, MAIN_CONFIG).generator, MIXTURE)["model"]
    save_file({k: v.contiguous() for k, v in network.state_dict().items()},
              run / "generator" / "generator.safetensors", metadata={"family": "flow"})
    record = {"kind": "latents", "num_classes": 4, "shape": [10], "tokenizer": "",
              "vocab_size": 0}
    (run / "generator" / "modelled.json").write_text(json.dumps(record, indent=2,
                                                                sort_keys=True) + "\n")
    return network.eval()


def test_a_run_written_by_main_loads(tmp_path):
    network = write_main_run(tmp_path / "run")
    for path in (tmp_path / "run", tmp_path / "run" / "generator"):
        generator = Generator.load(path)
        assert generator.family == "flow" and generator.what == MIXTURE
        assert generator.cfg.data.spec == "mixture:n=200,k=4" and generator.cfg.generator.steps == 3
        x, t, cond = torch.randn(6, 10), torch.rand(6), torch.arange(6) % 4
        assert torch.equal(generator.network(x, t, cond), network(x, t, cond))
    sample_to_file(tmp_path / "run", 8, tmp_path / "s.npz")
    with np.load(tmp_path / "s.npz") as f:
        assert f["vectors"].shape == (8, 10) and f["labels"].tolist() == [0, 1, 2, 3] * 2


def test_a_trained_generator_folder_loads_alone(tmp_path):
    cfg = C.load(GeneratorRunConfig, MAIN_CONFIG)
    train_generator(cfg, tmp_path / "run")
    folder = tmp_path / "run" / "generator"
    assert sorted(p.name for p in folder.iterdir()) == sorted([CONFIG, MODELLED, WEIGHTS])
    assert (folder / CONFIG).read_text() == (tmp_path / "run" / "config.yaml").read_text()
    shutil.copytree(folder, tmp_path / "moved")  # without the run around it
    moved, original = Generator.load(tmp_path / "moved"), Generator.load(tmp_path / "run")
    recorded = dataclasses.replace(cfg.generator, condition="class", text=None)  # auto, chosen
    assert moved.cfg == dataclasses.replace(cfg, generator=recorded) and moved.what == MIXTURE
    g = [torch.Generator().manual_seed(0) for _ in range(2)]
    labels = torch.arange(5) % 4
    assert torch.equal(moved.sample(5, labels, generator=g[0]),
                       original.sample(5, labels, generator=g[1]))


def broken_folders(root: Path) -> dict[str, tuple[Path, str]]:
    """name -> (a folder that is not a generator, what its error must say)."""
    write_main_run(root / "run")
    cases = {"empty": (root / "empty", f"not a generator run or folder (no {MODELLED}")}
    cases["empty"][0].mkdir()
    loose = root / "loose"  # a saved folder that lost its config, outside any run
    shutil.copytree(root / "run" / "generator", loose)
    cases["no config"] = (loose, f"{loose}: no {CONFIG}")
    no_weights = root / "no-weights"
    shutil.copytree(root / "run", no_weights)
    (no_weights / "generator" / WEIGHTS).unlink()
    cases["no weights"] = (no_weights, f"{no_weights / 'generator'}: no {WEIGHTS}")
    bad = root / "bad-modelled"
    shutil.copytree(root / "run", bad)
    (bad / "generator" / MODELLED).write_text("{\"shape\": [10]}")
    cases["bad modelled"] = (bad, f"{bad / 'generator' / MODELLED}: cannot be read")
    return cases


def test_a_folder_that_is_not_a_generator_is_refused_in_one_line(tmp_path, capsys):
    for name, (folder, message) in broken_folders(tmp_path).items():
        with pytest.raises(CheckpointError) as found:
            Generator.load(folder)
        assert message in str(found.value) and "\n" not in str(found.value), name
        code, _, err = run_main(capsys, ["sample", "--generator", str(folder), "--out",
                                         str(tmp_path / "x.npz")])
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (name, err)
