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
from pathlib import Path

import torch

from latentlab.data import load_dataset
from latentlab.data.base import LatentlabDataset
from latentlab.generation.config import GeneratorRunConfig
from latentlab.generation.encode import cached_split
from latentlab.generation.generator import FOLDER, Generator
from latentlab.generation.models import Modelled, build_models, build_process, resolve_network
from latentlab.generation.objectives import (
    ARObjective,
    GANObjective,
    GeneratorObjective,
    ProcessObjective,
)
from latentlab.nn import num_parameters
from latentlab.tokenizers.tokenizer import Tokenizer
from latentlab.training import RunDir, train
from latentlab.training import distributed as D
from latentlab.training.flops import first_batch, mean_step_flops
from latentlab.training.rundir import Mode
from latentlab.training.skeleton import run_skeleton

log = logging.getLogger("latentlab")


def generator_data(cfg: GeneratorRunConfig) -> tuple[LatentlabDataset, LatentlabDataset,
                                                       Modelled]:
    """Train and test data of the run: latent caches of the tokenizer, or the data itself."""
    if cfg.tokenizer:
        train_data, test_data = (cached_split(cfg.tokenizer, cfg.data.spec, split)
                                 for split in ("train", "test"))
        vocab = int(train_data.source.get("codebook_size", "0"))
        what = Modelled(tuple(train_data.shape), train_data.kind, train_data.num_classes, vocab)
    else:
        train_data = load_dataset(cfg.data.spec, "train", skip_corrupt=cfg.data.skip_corrupt)
        test_data = load_dataset(cfg.data.spec, "test", skip_corrupt=cfg.data.skip_corrupt)
        what = Modelled(tuple(train_data.shape), "latents", train_data.num_classes)
    return train_data, test_data, what


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


def make_objective(cfg: GeneratorRunConfig, what: Modelled,
                   tokenizer: Tokenizer | None) -> GeneratorObjective:
    g = cfg.generator
    models = build_models(g, what)
    render = renderer(tokenizer, what)
    if g.family == "ar":
        return ARObjective(models["model"], what.num_classes, g.label_dropout, render)
    if g.family == "gan":
        return GANObjective(models["model"], models["discriminator"], what.num_classes,
                            g.network.loss, render)
    return ProcessObjective(models["model"], build_process(g), what.num_classes,
                            g.label_dropout, render)


def train_generator(cfg: GeneratorRunConfig, out: str | Path, mode: Mode = "new") -> dict:
    """Train the generator `cfg` describes into run directory `out`; returns final metrics."""
    world = D.setup(cfg.train.device)
    train_data, test_data, what = generator_data(cfg)
    cfg = dataclasses.replace(cfg, generator=resolve_network(cfg.generator, what))
    tokenizer = Tokenizer.load(cfg.tokenizer) if cfg.tokenizer else None

    def body(run: RunDir, text: str) -> dict:
        objective = make_objective(cfg, what, tokenizer)
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
            Generator(cfg, what, model).save(run.path / FOLDER)
        return metrics

    return run_skeleton(cfg, out, mode, body, seed=cfg.train.seed, writer=world.is_main)
