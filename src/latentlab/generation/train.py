"""`latentlab train-generator`: train a generator on a tokenizer's latents, or directly on data.

The run directory gets, besides what every run has (see `training.rundir`):
    RUN/generator/      the trained generator (EMA weights, config, what it models), the folder
                        `generation.generator.Generator.load` reads
    RUN/metrics.json    held-out figures
`latentlab sample --generator RUN` needs nothing else (and the tokenizer run it names).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from latentlab.data import load_dataset
from latentlab.data.base import LatentlabDataset
from latentlab.data.text import TextTokenizer
from latentlab.generation.config import GeneratorConfig, GeneratorRunConfig
from latentlab.generation.encode import cached_split, load_tokenizer
from latentlab.generation.generator import FOLDER, Generator
from latentlab.generation.models import (
    Modelled,
    build_models,
    build_process,
    null_condition,
    pixel_levels,
    resolve_network,
)
from latentlab.generation.objectives import (
    ARObjective,
    GANObjective,
    GeneratorObjective,
    MaskGITObjective,
    PixelCNNObjective,
    ProcessObjective,
)
from latentlab.generation.prompts import Prompted, prompt_tokenizer, resolve_condition
from latentlab.nn import num_parameters
from latentlab.tokenizers.tokenizer import Tokenizer
from latentlab.training import RunDir, train
from latentlab.training import distributed as D
from latentlab.training.flops import first_batch, mean_step_flops
from latentlab.training.rundir import Mode
from latentlab.training.skeleton import run_skeleton

log = logging.getLogger("latentlab")


@dataclass
class GeneratorData:
    """What a generator run trains on.

    Attributes:
        train, test: the splits (latent caches of the tokenizer, or the data itself); for a
            text-conditioned run their labels are prompt token ids (`Prompted`).
        what: what the generator models.
        generator: the generator config with its condition resolved for this data.
        prompts: the tokenizer of the prompts of a text-conditioned run, else None.
    """

    train: LatentlabDataset
    test: LatentlabDataset
    what: Modelled
    generator: GeneratorConfig
    prompts: TextTokenizer | None


def generator_data(cfg: GeneratorRunConfig) -> GeneratorData:
    """Train and test data of the run, and what it models."""
    if cfg.tokenizer:
        text = cfg.generator.condition in ("auto", "text")
        train_data, test_data = (cached_split(cfg.tokenizer, cfg.data.spec, split, text)
                                 for split in ("train", "test"))
        kind, vocab = train_data.kind, int(train_data.source.get("codebook_size", "0"))
    else:
        train_data = load_dataset(cfg.data.spec, "train", skip_corrupt=cfg.data.skip_corrupt)
        test_data = load_dataset(cfg.data.spec, "test", skip_corrupt=cfg.data.skip_corrupt)
        kind, vocab = "latents", 0
        if cfg.generator.family == "pixelcnn":  # pixels, quantised to one token per pixel
            kind, vocab = "pixels", cfg.generator.network.levels ** train_data.shape[0]
    g = resolve_condition(cfg.generator, train_data)
    prompts = None
    if g.condition == "text":
        prompts = prompt_tokenizer(g.text, train_data)
        train_data, test_data = Prompted(train_data, prompts), Prompted(test_data, prompts)
    classes = train_data.num_classes if g.condition == "class" else 0
    what = Modelled(tuple(train_data.shape), kind, classes, vocab, g.condition)
    return GeneratorData(train_data, test_data, what, g, prompts)


def renderer(tokenizer: Tokenizer | None, what: Modelled):
    """Generated items -> images (B, C, H, W) in [-1, 1] for preview grids (None: vectors)."""
    if tokenizer is None:
        return (lambda x: x.float().clamp(-1, 1)) if len(what.shape) == 3 else None
    if tokenizer.cfg.arch.kind == "mlp":
        return None  # a vector tokenizer: nothing to draw

    @torch.no_grad()
    def render(items: torch.Tensor) -> torch.Tensor:
        tok = tokenizer.to(items.device)
        latent = items if what.kind == "indices" else tok.denormalize(items.float())
        return tok.decode(latent).float().clamp(-1, 1)
    return render


def make_objective(cfg: GeneratorRunConfig, what: Modelled, tokenizer: Tokenizer | None,
                   prompts: TextTokenizer | None = None) -> GeneratorObjective:
    g = cfg.generator
    models = build_models(g, what, prompts)
    render = renderer(tokenizer, what)
    null = null_condition(what, prompts)
    if g.family == "ar":
        return ARObjective(models["model"], null, g.label_dropout, render)
    if g.family == "maskgit":
        return MaskGITObjective(models["model"], null, g.label_dropout, render, g.steps)
    if g.family == "pixelcnn":
        return PixelCNNObjective(models["model"], null, g.label_dropout, render,
                                 pixel_levels(g, what))
    if g.family == "gan":
        return GANObjective(models["model"], models["discriminator"], null, g.network.loss,
                            render)
    return ProcessObjective(models["model"], build_process(g), null, g.label_dropout, render)


def train_generator(cfg: GeneratorRunConfig, out: str | Path, mode: Mode = "new") -> dict:
    """Train the generator `cfg` describes into run directory `out`; returns final metrics."""
    world = D.setup(cfg.train.device)
    data = generator_data(cfg)
    train_data, test_data, what = data.train, data.test, data.what
    cfg = dataclasses.replace(cfg, generator=resolve_network(data.generator, what))
    tokenizer = load_tokenizer(cfg.tokenizer, cfg.data.spec) if cfg.tokenizer else None

    def body(run: RunDir, text: str) -> dict:
        objective = make_objective(cfg, what, tokenizer, data.prompts)
        step_flops = mean_step_flops(objective, first_batch(train_data, cfg.train.batch_size),
                                     cfg.train.steps, points=1)
        result = train(objective, train_data, cfg.train, run, text, eval_data=test_data,
                       num_workers=cfg.data.num_workers)
        model = result.eval_model
        metrics = {"test": {k.removeprefix("eval/"): v for k, v in result.evals.items()},
                   "modelled": what.as_dict(),
                   "parameters": num_parameters(model),
                   "steps": result.step, "replicas_identical": result.replicas_identical,
                   "step_flops": step_flops, "train_flops": step_flops * cfg.train.steps}
        if world.is_main:
            Generator(cfg, what, model, data.prompts).save(run.path / FOLDER)
        return metrics

    return run_skeleton(cfg, out, mode, body, seed=cfg.train.seed, writer=world.is_main)
