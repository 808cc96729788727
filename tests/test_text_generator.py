"""Text-conditioned generators as a user runs them: `train-generator` on captioned shapes, then
`sample --prompt / --prompts`; one-line errors for prompts and conditions that cannot be served;
AR and GAN over text; a frozen pretrained text model saved with the run; latent caches that keep
the captions."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from latentlab import config as C
from latentlab.data import load_dataset
from latentlab.data.latent_cache_writer import write_latent_cache
from latentlab.errors import ConfigError
from latentlab.generation.config import GeneratorRunConfig
from latentlab.generation.encode import cached_split, default_cache_path, source_record
from latentlab.generation.generator import Generator

from .conftest import run_main
from .test_text import folders  # noqa: F401  (the tiny random CLIP and T5 folders)

SPEC = "shapes:size=8,n=64"
PROMPT = "a red circle at the top left"
TINY_TEXT = ["--generator.text.width", "16", "--generator.text.depth", "1",
             "--generator.text.heads", "2", "--generator.text.max_len", "16"]
TINY_TRAIN = ["--train.steps", "2", "--train.batch_size", "16", "--train.eval_every", "0",
              "--train.log_every", "1", "--train.warmup", "0"]




def train(capsys, out, *args: str, spec: str = SPEC) -> None:
    """`latentlab train-generator` with tiny settings; asserts it succeeds."""
    code, _, err = run_main(capsys, ["train-generator", "--data.spec", spec, "--out", str(out),
                                     *TINY_TRAIN, *args])
    assert code == 0, err


def dit(*args: str) -> list[str]:
    return ["--generator.network.kind", "dit", "--generator.network.width", "16",
            "--generator.network.depth", "1", "--generator.network.heads", "2",
            "--generator.steps", "2", *args]


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """A flow DiT on the pixels of captioned shapes, condition left at auto."""
    out = tmp_path_factory.mktemp("text") / "gen"
    from latentlab.cli import main

    assert main(["train-generator", "--data.spec", SPEC, "--out", str(out), *TINY_TRAIN,
                 *dit(*TINY_TEXT)]) == 0
    return out


def samples(capsys, run, out, *args: str) -> dict[str, np.ndarray]:
    """`latentlab sample` into `out`; its arrays, read without pickle."""
    code, _, err = run_main(capsys, ["sample", "--generator", str(run), "--out", str(out),
                                     *args])
    assert code == 0, err
    with np.load(out, allow_pickle=False) as f:
        return dict(f)


# ---------------------------------------------------------------------- end to end


def test_auto_condition_is_recorded_as_text(text_run):
    cfg = C.load(GeneratorRunConfig, text_run / "config.yaml")
    assert cfg.generator.condition == "text" and cfg.generator.text.width == 16
    assert (text_run / "generator" / "text" / "tokenizer.json").is_file()


def test_a_prompt_is_repeated_and_saved_beside_the_images(text_run, tmp_path, capsys):
    f = samples(capsys, text_run, tmp_path / "s.npz", "--prompt", PROMPT, "--n", "4",
                "--grid", str(tmp_path / "g.png"))
    assert f["images"].shape == (4, 8, 8, 3) and f["images"].dtype == np.uint8
    assert f["prompts"].dtype.kind == "U" and f["prompts"].tolist() == [PROMPT] * 4
    assert f["labels"].tolist() == [-1] * 4
    assert (tmp_path / "g.png").stat().st_size > 0


def test_a_prompts_file_is_cycled_to_fill_n(text_run, tmp_path, capsys):
    captions = [load_dataset(SPEC, "train").caption(i) for i in range(3)]
    lines = [captions[0], "", captions[1] + "  ", captions[2]]
    (tmp_path / "p.txt").write_text("\n".join(lines) + "\n")
    f = samples(capsys, text_run, tmp_path / "s.npz", "--prompts", str(tmp_path / "p.txt"),
                "--n", "5")
    wanted = [lines[0], lines[2].strip(), lines[3]]
    assert f["prompts"].tolist() == wanted + wanted[:2]


def test_default_prompts_are_the_test_captions_in_order(text_run, tmp_path, capsys):
    f = samples(capsys, text_run, tmp_path / "s.npz", "--n", "5")
    test = load_dataset(SPEC, "test")
    assert f["prompts"].tolist() == [test.caption(i) for i in range(5)]


def test_save_load_round_trip_gives_identical_samples(text_run, tmp_path):
    a = Generator.load(text_run)
    a.save(tmp_path / "copy")
    b = Generator.load(tmp_path / "copy")
    ids = a.encode_prompts([PROMPT, "a blue square at the bottom right"])
    assert torch.equal(ids, b.encode_prompts([PROMPT, "a blue square at the bottom right"]))
    assert torch.equal(ids, a.prompts.encode(["a red circle at the top left",
                                              "a blue square at the bottom right"]))
    draw = [g.sample(2, ids, steps=3, generator=torch.Generator().manual_seed(5)) for g in (a, b)]
    assert torch.equal(draw[0], draw[1])
    assert not torch.equal(draw[0], a.sample(2, ids, steps=3,
                                             generator=torch.Generator().manual_seed(6)))


def test_guidance_scale_one_is_conditional_sampling(text_run):
    gen = Generator.load(text_run)
    torch.manual_seed(0)
    with torch.no_grad():  # as after long training: the prompt moves every prediction
        for p in gen.network.parameters():
            p.add_(torch.randn_like(p), alpha=0.1)
    ids = gen.encode_prompts([PROMPT, "a blue square at the bottom right"])
    draw = {scale: gen.sample(2, ids, steps=3, guidance=scale,
                              generator=torch.Generator().manual_seed(3))
            for scale in (None, 1.0, 0.0)}
    torch.testing.assert_close(draw[1.0], draw[None], atol=1e-5, rtol=1e-5)
    assert (draw[0.0] - draw[None]).abs().max() > 1e-2  # scale 0: the null prompt


# ---------------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def class_run(tmp_path_factory):
    """A class-conditional flow DiT on digits (no captions)."""
    from latentlab.cli import main

    out = tmp_path_factory.mktemp("class") / "gen"
    assert main(["train-generator", "--data.spec", "digits", "--out", str(out), *TINY_TRAIN,
                 *dit()]) == 0
    return out


def test_bad_prompt_requests_are_one_line_errors(text_run, class_run, tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("\n  \n")
    (tmp_path / "p.txt").write_text(PROMPT + "\n")
    (tmp_path / "bad.txt").write_text(PROMPT + "\na red zebra\n")
    long = " ".join(["red"] * 40)
    cases = [
        ([text_run, "--prompt", ""], '--prompt "": is empty'),
        ([text_run, "--prompt", "a purple zebra"], '"zebra"'),
        ([text_run, "--prompt", long], "more than the limit of 16 tokens"),
        ([class_run, "--prompt", PROMPT], "not text-conditioned"),
        ([text_run, "--labels", "1"], "--labels: this generator is conditioned on text"),
        ([text_run, "--prompt", PROMPT, "--prompts", tmp_path / "p.txt"],
         "--prompt and --prompts"),
        ([text_run, "--prompts", tmp_path / "empty.txt"], "no prompts in the file"),
        ([text_run, "--prompts", tmp_path / "missing.txt"], "cannot be read"),
        ([text_run, "--prompts", tmp_path / "bad.txt"], '--prompt 2 of 2 "a red zebra"'),
    ]
    for args, message in cases:
        code, _, err = run_main(capsys, ["sample", "--generator", *map(str, args), "--n", "2",
                                         "--out", str(tmp_path / "x.npz")])
        err = err.strip()
        assert code == 2 and message in err and len(err.splitlines()) == 1, (args, err)
        assert "Traceback" not in err
    assert not (tmp_path / "x.npz").exists()


def test_text_condition_on_uncaptioned_data_names_the_field(tmp_path, capsys):
    code, _, err = run_main(capsys, ["train-generator", "--data.spec", "digits",
                                     "--generator.condition", "text", "--out",
                                     str(tmp_path / "g"), *TINY_TRAIN, *dit()])
    assert code == 2 and "generator.condition" in err and len(err.strip().splitlines()) == 1
    cfg = C.load(GeneratorRunConfig, None, {"data": {"spec": "digits"},
                                            "generator": {"condition": "text"}})
    from latentlab.generation.train import generator_data

    with pytest.raises(ConfigError, match=r"generator\.condition: text, but .* no captions"):
        generator_data(cfg)


# ---------------------------------------------------------------------- AR, GAN, latent caches


@pytest.fixture(scope="module")
def fsq_tokenizer(tmp_path_factory):
    """A tiny FSQ tokenizer of captioned shapes (its weights do not matter here)."""
    from latentlab.data.config import DataConfig
    from latentlab.recipes.train import train_tokenizer
    from latentlab.tokenizers.bottlenecks import FSQConfig

    from .conftest import tiny_run_config

    cfg = tiny_run_config(steps=2, batch_size=16)
    cfg = dataclasses.replace(cfg, data=DataConfig(spec=SPEC), model=dataclasses.replace(
        cfg.model, bottleneck=FSQConfig(levels=(3, 3))))
    out = tmp_path_factory.mktemp("fsq") / "tok"
    train_tokenizer(cfg, out)
    return out


def test_ar_over_a_discrete_tokenizer_samples_a_prompt(fsq_tokenizer, tmp_path, capsys):
    train(capsys, tmp_path / "gen", "--tokenizer", str(fsq_tokenizer), "--generator.family",
          "ar", "--generator.network.kind", "ar", "--generator.network.width", "16",
          "--generator.network.depth", "1", "--generator.network.heads", "2", *TINY_TEXT)
    cfg = C.load(GeneratorRunConfig, tmp_path / "gen" / "config.yaml")
    assert cfg.generator.condition == "text"
    f = samples(capsys, tmp_path / "gen", tmp_path / "s.npz", "--prompt", PROMPT, "--n", "3",
                "--cfg", "2")
    assert f["images"].shape == (3, 8, 8, 3) and f["prompts"].tolist() == [PROMPT] * 3


def test_gan_with_text_trains_and_samples(tmp_path, capsys):
    train(capsys, tmp_path / "gen", "--generator.family", "gan", "--generator.network.kind",
          "gan", "--generator.network.width", "16", "--generator.network.noise_dim", "8",
          *TINY_TEXT)
    gen = Generator.load(tmp_path / "gen")
    assert gen.what.condition == "text" and gen.prompts is not None
    f = samples(capsys, tmp_path / "gen", tmp_path / "s.npz", "--prompt", PROMPT, "--n", "3")
    assert f["images"].shape == (3, 8, 8, 3) and f["prompts"].tolist() == [PROMPT] * 3


def test_latent_caches_keep_captions_and_old_ones_are_rewritten(fsq_tokenizer):
    data = load_dataset(SPEC, "test")
    cache = cached_split(fsq_tokenizer, SPEC, "test", captions=True)
    assert cache.captioned and [cache.caption(i) for i in range(len(cache))] == [
        data.caption(i) for i in range(len(data))]
    # a cache as written before caches kept captions: kept while no caller needs them
    path = default_cache_path(fsq_tokenizer, SPEC, "test")
    values = cache.__getitems__(list(range(len(cache))))
    write_latent_cache(path, [(values.x, values.y)], source_record(fsq_tokenizer),
                       cache.class_names, cache.kind, overwrite=True)
    assert not cached_split(fsq_tokenizer, SPEC, "test").captioned
    again = cached_split(fsq_tokenizer, SPEC, "test", captions=True)
    assert again.captioned and again.caption(3) == data.caption(3)
    assert torch.equal(again.__getitems__([0, 5]).x, values.x[[0, 5]])


# ---------------------------------------------------------------------- a frozen pretrained model


@pytest.mark.parametrize("name", ["clip", "t5"])
def test_a_frozen_pretrained_text_model_is_saved_with_the_run(folders, name, tmp_path,  # noqa: F811
                                                              capsys):
    folder = tmp_path / name
    shutil.copytree(folders[name], folder)
    train(capsys, tmp_path / "gen", "--generator.text.pretrained", str(folder),
          "--generator.text.max_len", "16", *dit())
    assert (tmp_path / "gen" / "generator" / "text" / "model.json").is_file()
    from transformers import CLIPTextModel, T5EncoderModel

    model = {"clip": CLIPTextModel, "t5": T5EncoderModel}[name]
    original = model.from_pretrained(folder, local_files_only=True).state_dict()
    saved = load_file(tmp_path / "gen" / "generator" / "generator.safetensors")
    frozen = {k.removeprefix("text.model."): v for k, v in saved.items()
              if k.startswith("text.model.")}
    assert frozen.keys() == original.keys()
    for name, value in frozen.items():
        assert torch.equal(value, original[name]), name  # bitwise unchanged by training
    before = samples(capsys, tmp_path / "gen", tmp_path / "a.npz", "--prompt", PROMPT, "--n",
                     "2")
    shutil.rmtree(folder)  # the run alone samples
    after = samples(capsys, tmp_path / "gen", tmp_path / "b.npz", "--prompt", PROMPT, "--n",
                    "2")
    np.testing.assert_array_equal(before["images"], after["images"])
