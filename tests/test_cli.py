"""The command line: user errors are one line with exit status 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import run_main

FAST = ["--train.steps", "2", "--train.batch_size", "8", "--model.arch.channels", "8",
        "--train.warmup", "0"]


@pytest.mark.parametrize("argv, message", [
    (["train-tokenizer"], "--out: required (the run directory)"),
    (["train-tokenizer", "--out", "X", "--coupled.weight", "0.5"],
     "--coupled.weight: does not act in this configuration (its section is off; see --help)"),
    (["train-tokenizer", "--out", "X", "--model.bottleneck.codebook_size", "8"],
     "model.bottleneck.codebook_size: a setting of kind vq, gumbel or hvq, not of kind 'kl'"),
    (["train-tokenizer", "--out", "X", "--train.steps", "0"], "train.steps: must be >= 1"),
    (["train-tokenizer", "--out", "X", "--train.stpes", "3"], "unrecognized arguments"),
    (["train-tokenizer", "--out", "X", "--config", "missing.yaml"], "no such config file"),
    (["train-tokenizer", "--out", "X", "--resume", "--overwrite"], "exclude each other"),
    (["train-tokenizer", "--out", "nowhere", "--resume"], "no run to resume"),
    (["train-tokenizer", "--out", "X", "--data.spec", "faces:size=20", "--model.arch.ch_mult",
      "[1,2,2,2]"], "model.arch.ch_mult: downsampling factor 8 does not divide the image size "
                    "20x20"),
    (["train-tokenizer", "--out", "X", "--model.bottleneck.kind", "vq",
      "--model.bottleneck.codebook_size", "0"], "model.bottleneck.codebook_size: must be"),
    (["train-tokenizer", "--out", "X", "--model.bottleneck.kind", "fsq",
      "--model.bottleneck.levels", "[1,5]", "--model.latent_channels", "2"],
     "model.bottleneck.levels"),
    (["train-tokenizer", "--out", "X", "--data.spec", "nosuchset"], "nosuchset"),
    (["nosuchcommand"], "invalid choice"),
])
def test_user_errors_are_one_line_exit_2(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(capsys, argv)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_existing_run_needs_resume_or_overwrite(capsys, tmp_path):
    out = str(tmp_path / "run")
    assert run_main(capsys, ["train-tokenizer", "--out", out, *FAST])[0] == 0
    code, _, err = run_main(capsys, ["train-tokenizer", "--out", out, *FAST])
    assert code == 2 and "already holds a run; pass --resume" in err
    assert run_main(capsys, ["train-tokenizer", "--out", out, *FAST, "--overwrite"])[0] == 0
    # resuming with a different architecture is refused by name
    code, _, err = run_main(capsys, ["train-tokenizer", "--out", out, *FAST, "--resume",
                                     "--model.arch.channels", "16"])
    assert code == 2 and "model.arch.channels is 16 here but 8" in err
    # extending a finished run is allowed
    code, _, _ = run_main(capsys, ["train-tokenizer", "--out", out, "--resume",
                                   "--train.steps", "4"])
    assert code == 0


def test_refuses_to_delete_a_foreign_directory(capsys, tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    code, _, err = run_main(capsys, ["train-tokenizer", "--out", str(tmp_path), "--overwrite",
                                     *FAST])
    assert code == 2 and "refusing to delete" in err
    assert (tmp_path / "precious.txt").exists()


def test_real_process_exit_code_and_help():
    done = subprocess.run([sys.executable, "-m", "latentlab", "train-tokenizer", "--out", "x",
                           "--train.lr", "-1"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == "latentlab: error: train.lr: must be > 0, got -1.0"
    helped = subprocess.run([sys.executable, "-m", "latentlab", "train-tokenizer", "--help"],
                            capture_output=True, text=True)
    assert helped.returncode == 0 and "Optimizer steps to train for" in helped.stdout


def test_data_info(capsys, tmp_path):
    grid = tmp_path / "grid.png"
    code, out, _ = run_main(capsys, ["data", "info", "digits", "--grid", str(grid)])
    assert code == 0 and grid.stat().st_size > 0
    assert "1437 items of (1, 8, 8)" in out and "360 items" in out
    code, _, err = run_main(capsys, ["data", "info", "mixture:k=x"])
    assert code == 2 and err.strip() == ("latentlab: error: dataset spec 'mixture:k=x': option "
                                         "'k' must be a positive integer, got 'x'")


@pytest.mark.parametrize("argv, line", [
    (["train-tokenizer", "--train.stpes", "5", "--out", "x"],
     "latentlab train-tokenizer: error: unrecognized arguments: --train.stpes (did you mean "
     "--train.steps?)"),
    (["train-tokenizer", "--preset", "digit-kl", "--out", "x"],
     "latentlab train-tokenizer: error: argument --preset: invalid choice: 'digit-kl' (did you "
     "mean digits-kl?)"),
    (["trian-tokenizer", "--out", "x"],
     "latentlab: error: argument command: invalid choice: 'trian-tokenizer' (did you mean "
     "train-tokenizer?)"),
    (["data", "info", "digits", "--gird", "x"],
     "latentlab data info: error: unrecognized arguments: --gird (did you mean --grid?)"),
    (["train-tokenizer", "--out", "x", "--zzzzzz", "5"],  # nothing close: no suggestion
     "latentlab train-tokenizer: error: unrecognized arguments: --zzzzzz (see --help)"),
])
def test_a_misspelling_gets_the_closest_word_in_one_line(capsys, tmp_path, monkeypatch, argv,
                                                          line):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(capsys, argv)
    assert (code, out, err) == (2, "", line + "\n")
    assert not (tmp_path / "x").exists()  # refused before anything ran


def test_top_level_help_is_written_for_users(capsys):
    code, out, _ = run_main(capsys, ["--help"])
    assert code == 0
    first = out.split("\n\n")[1]  # after the usage lines
    assert first.startswith("Train latent generative models as one system: a tokenizer")
    assert "\n  latentlab demo\n" in out
    assert "latentlab train-tokenizer --preset digits-kl --out runs/kl" in out
    assert "latentlab train-generator --tokenizer runs/kl --out runs/flow" in out
    assert "plain function" not in out


def test_every_command_module_is_in_the_registry_once():
    from pathlib import Path

    from latentlab import commands
    from latentlab.cli import build_parser

    modules = {p.stem for p in Path(commands.__file__).parent.glob("*.py")}
    registered = [m.__name__.rpartition(".")[2] for m in commands.COMMANDS]
    assert sorted(registered) == sorted(modules - {"__init__", "common", "options"})
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert list(sub.choices) == [
        "demo", "study", "train-tokenizer", "encode", "train-generator", "sample", "evaluate",
        "scaling", "toy-mixture", "train-codec", "compress", "decompress", "data"]


def option_names(text: str) -> set[str]:
    return {word for line in text.splitlines() for word in line.split()
            if word.startswith("--")}


@pytest.mark.parametrize("argv, acting, hidden", [
    (["train-tokenizer"], {"--model.bottleneck.weight", "--model.arch.ch_mult", "--train.steps"},
     {"--model.bottleneck.codebook_size", "--coupled.weight", "--dae.weak_width",
      "--loss.discriminator.weight", "--model.arch.encoder_hidden"}),
    (["train-tokenizer", "--preset", "mixture-vq", "--recipe", "coupled"],
     {"--model.bottleneck.codebook_size", "--model.arch.encoder_hidden", "--coupled.weight"},
     {"--model.bottleneck.weight", "--model.arch.ch_mult", "--dae.weak_width"}),
    (["train-generator", "--config", "configs/generators/digits-ar.yaml"],
     {"--generator.network.dropout", "--generator.network.width"},
     {"--generator.network.patch_size", "--generator.process.time_sampling",
      "--generator.network.noise_dim"}),
])
def test_help_lists_the_options_that_act_with_their_values(capsys, monkeypatch, argv, acting,
                                                           hidden):
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    code, out, _ = run_main(capsys, [*argv, "--help"])
    assert code == 0
    names = option_names(out)
    assert acting <= names and not hidden & names, (acting - names, hidden & names)
    code, everything, _ = run_main(capsys, [*argv, "--help-all"])
    assert code == 0 and acting | hidden <= option_names(everything)
    # the default tokenizer's help and a generator's fit a screenful or two; a coupled recipe
    # brings its thirty settings
    assert len(out.splitlines()) <= (160 if "--recipe" not in argv else 300)


def test_help_shows_the_chosen_values(capsys):
    code, out, _ = run_main(capsys, ["train-tokenizer", "--preset", "digits-vq",
                                     "--train.steps", "7", "--help"])
    assert code == 0
    assert "(default: 128)" in out.split("--model.bottleneck.codebook_size")[1].split("--")[0]
    assert "(default: 7)" in out.split("--train.steps")[1].split("--")[0]
