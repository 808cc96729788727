"""`latentlab train-generator`: train a generator on a tokenizer's latents, or directly on data.

The run directory gets, besides what every run has (see `training.rundir`):
    RUN/generator/generator.safetensors   the EMA weights of the generator
    RUN/generator/modelled.json           what it models: item shape, kind, classes, vocabulary
    RUN/metrics.json                      held-out figures
`latentlab sample --generator RUN` needs nothing else (and the tokenizer run it names).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from latentlab import config as C
from latentlab.data import load_dataset
from latentlab.data.base import LatentlabDataset
from latentlab.errors import CheckpointError, UserError
from latentlab.generation.config import GeneratorRunConfig
from latentlab.generation.encode import cached_split
from latentlab.generation.models import Modelled, build_models, build_process
from latentlab.generation.objectives import (
    ARObjective,
    GANObjective,
    GeneratorObjective,
    ProcessObjective,
)
from latentlab.io import atomic_path, write_json
from latentlab.tokenizers.tokenizer import Tokenizer, load_weights
from latentlab.training import RunDir, train
from latentlab.training import distributed as D
from latentlab.training.flops import first_batch, mean_step_flops
from latentlab.training.rundir import Mode
from latentlab.training.skeleton import run_skeleton

log = logging.getLogger("latentlab")
WEIGHTS, MODELLED = "generator.safetensors", "modelled.json"


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
    if tokenizer.cfg.arch == "mlp":
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
                            g.gan.loss, render)
    return ProcessObjective(models["model"], build_process(g), what.num_classes,
                            g.label_dropout, render)


def train_generator(cfg: GeneratorRunConfig, out: str | Path, mode: Mode = "new") -> dict:
    """Train the generator `cfg` describes into run directory `out`; returns final metrics."""
    world = D.setup(cfg.train.device)
    train_data, test_data, what = generator_data(cfg)
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
                   "parameters": sum(p.numel() for p in model.parameters()),
                   "steps": result.step, "replicas_identical": result.replicas_identical,
                   "step_flops": step_flops, "train_flops": step_flops * cfg.train.steps}
        if world.is_main:
            save_generator(model, what, cfg, run.path / "generator")
        return metrics

    return run_skeleton(cfg, out, mode, body, seed=cfg.train.seed, writer=world.is_main)


def save_generator(model: torch.nn.Module, what: Modelled, cfg: GeneratorRunConfig,
                   directory: Path) -> None:
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS) as tmp:
        save_file(tensors, tmp, metadata={"family": cfg.generator.family})
    write_json(directory / MODELLED, what.as_dict() | {"tokenizer": cfg.tokenizer})


def load_network(run: str | Path) -> tuple[GeneratorRunConfig, Modelled, torch.nn.Module]:
    """A generator run's config, what it models and its trained network (eval mode, CPU),
    without the tokenizer the run names. One-line errors for a missing or damaged run."""
    run = Path(run)
    if not (run / "config.yaml").exists():
        raise CheckpointError(f"{run}: not a generator run (no config.yaml)")
    cfg = C.load(GeneratorRunConfig, run / "config.yaml")
    what = load_modelled(run)
    model = build_models(cfg.generator, what)["model"]
    path = run / "generator" / WEIGHTS
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: cannot be read ({e})") from None
    load_weights(model, tensors, str(path))
    return cfg, what, model.eval()


def load_modelled(run: Path) -> Modelled:
    try:
        record = json.loads((run / "generator" / MODELLED).read_text())
    except (OSError, json.JSONDecodeError):
        raise UserError(f"{run}: not a trained generator (no generator/{MODELLED})") from None
    return Modelled(tuple(record["shape"]), record["kind"], record["num_classes"],
                    record["vocab_size"])

