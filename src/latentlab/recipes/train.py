"""`latentlab train-tokenizer`: train a decomposer and leave a self-describing run directory."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from latentlab import config as C
from latentlab import pixels
from latentlab.data import load_dataset
from latentlab.data.config import DataConfig
from latentlab.errors import ConfigError, DataError, UserError
from latentlab.io import write_json
from latentlab.recipes.baseline import ReconstructionObjective, eval_batches
from latentlab.tokenizers.autoencoder import Autoencoder, AutoencoderConfig
from latentlab.training import RunDir, TrainConfig, train
from latentlab.training import distributed as D
from latentlab.training.rundir import Mode

log = logging.getLogger("latentlab")


@dataclass
class TokenizerRunConfig:
    """Everything `train-tokenizer` needs."""

    data: DataConfig = field(default_factory=DataConfig)
    """Where the images come from."""
    model: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    """The decomposer's architecture."""
    loss: Literal["l1", "l2"] = "l2"
    """Reconstruction loss."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """The training loop."""


TOKENIZER_PRESETS: dict[str, TokenizerRunConfig] = {
    "digits-ae": TokenizerRunConfig(
        data=DataConfig(spec="digits"),
        model=AutoencoderConfig(channels=32, ch_mult=(1, 2), blocks=1, latent_channels=2),
        train=TrainConfig(steps=1500, batch_size=64, lr=2e-3, warmup=100, eval_every=500,
                          checkpoint_every=500, log_every=100),
    ),
}


def _check_resume(cfg: TokenizerRunConfig, run: RunDir) -> None:
    """A resumed run must continue the same experiment; only its length may change."""
    stored = C.to_dict(C.load(TokenizerRunConfig, run.config_path))
    given = C.to_dict(cfg)
    stored["train"]["steps"] = given["train"]["steps"]
    for section, values in given.items():
        for key, value in (values.items() if isinstance(values, dict) else [(None, values)]):
            old = stored[section][key] if key else stored[section]
            if old != value:
                name = f"{section}.{key}" if key else section
                raise UserError(f"--resume: {name} is {value!r} here but {old!r} in "
                                f"{run.config_path}")


def mean_image_mse(train_data, test_data) -> float:
    """MSE of predicting every test image by the mean training image: the floor to beat."""
    mean = torch.stack([b.x.mean(0) * len(b.x) for b in eval_batches(train_data, "cpu")]
                       ).sum(0) / len(train_data)
    errors = [(b.x - mean).pow(2).flatten(1).mean(1) for b in eval_batches(test_data, "cpu")]
    return float(torch.cat(errors).mean())


def train_tokenizer(cfg: TokenizerRunConfig, out: str | Path, mode: Mode = "new") -> dict:
    """Train the decomposer `cfg` describes into run directory `out`; returns final metrics."""
    world = D.setup(cfg.train.device)
    data = load_dataset(cfg.data.spec, "train", skip_corrupt=cfg.data.skip_corrupt)
    test = load_dataset(cfg.data.spec, "test", skip_corrupt=cfg.data.skip_corrupt)
    if not data.is_image:
        raise DataError(f"data.spec: '{cfg.data.spec}' holds vectors of shape {data.shape}; "
                        "a convolutional tokenizer needs images")
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model,
                                                             in_channels=data.shape[0]))
    model = Autoencoder(cfg.model)
    try:
        model.check_input(data.shape)
    except ValueError as e:
        raise ConfigError(f"model.{e}") from None
    run = RunDir(out, mode, writer=world.is_main)
    if mode == "resume":
        _check_resume(cfg, run)
    text = C.dump_yaml(cfg)
    run.write_config(text)

    torch.manual_seed(cfg.train.seed)  # same initial weights on every rank
    model = Autoencoder(cfg.model)
    objective = ReconstructionObjective(model, cfg.loss)
    result = train(objective, data, cfg.train, run, text, eval_data=test,
                   num_workers=cfg.data.num_workers)

    metrics = {"test": {k.removeprefix("eval/"): v for k, v in result.evals.items()},
               "mean_image_mse": mean_image_mse(data, test),
               "parameters": sum(p.numel() for p in model.parameters()),
               "steps": result.step, "replicas_identical": result.replicas_identical}
    if world.is_main:
        write_json(run.path / "metrics.json", metrics)
        view = test.__getitems__(list(range(min(32, len(test)))))
        best = result.eval_model
        with torch.no_grad():
            recon = best(view.x.to(next(best.parameters()).device)).float().cpu()
        pixels.save_grid(torch.cat([view.x, recon]), run.samples / "reconstructions.png",
                         nrow=16, scale=4)
        log.info("wrote %s", run.path)
    return metrics


def load_metrics(run: str | Path) -> dict:
    return json.loads((Path(run) / "metrics.json").read_text())
