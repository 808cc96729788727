"""`latentlab scaling`: check the scaling-law extrapolation the coupled recipe leans on.

On one latent cache, train a tiny generator (`tiny.py`, the builder the coupled recipe uses) of
each width for the same steps on the same batches from the same seed, score each on held-out
items, fit L(N) = E + A N^(-alpha) over their parameter counts (`scaling.py`) and predict the
loss of a larger width; with `verify`, train that width the same way and compare.

Held-out protocol: the last `heldout_fraction` of the cache's items (the cache is stored in the
shuffled order of its split, so its tail is a fair sample), or a separate test cache. The loss of
a continuous process depends on the t and noise drawn; every item is scored under `eval_draws`
draws from a fixed seed, the same draws for every width (common random numbers), so the loss
differences between widths are not drowned in draw noise. An autoregressive model's held-out
loss is its exact next-token negative log-likelihood in nats per token: no draws.

An ill-posed fit (losses that do not fall with width, residuals over 5 %, ...) is a result, not
an error: the JSON then holds `fit: null` and `fit_error`, with the losses still reported.

The law assumes the held-out loss falls with size, which fails once the larger widths overfit a
small cache. On digits (1437 items) the MLP denoisers are sound at the default 1000 steps (~100
epochs) and overfit by 3000; the tiny transformers on 16-token grids overfit within ~200 steps
and need --steps of about 60. A width whose held-out loss exceeds its training loss by more than
`OVERFIT` is named in a warning.

Layout of `out` (a run directory, see `training.skeleton`)::

    out/config.yaml    the study's settings (`ScalingConfig`)
    out/width-32/      one training run per width (config.yaml, checkpoints/, metrics.jsonl)
    out/scaling.json   the result (below), also returned
    out/scaling.png    log-log plot: points, fitted law up to the predicted size, prediction
                       and, when verified, the actual loss

Legend: N items, D flattened item size (latent elements or tokens).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from einops import rearrange

from latentlab import config as C
from latentlab.data.base import Batch, LatentlabDataset, eval_batches
from latentlab.data.latent_cache import LatentCache
from latentlab.errors import ConfigError, DataError
from latentlab.generation.objectives import ARObjective, ProcessObjective
from latentlab.generators.process import Process
from latentlab.nn import num_parameters
from latentlab.recipes.scaling import IllPosedFit, PowerLaw, fit_power_law, rho_squared
from latentlab.recipes.scaling_plot import save_plot
from latentlab.recipes.tiny import (
    EVAL_SEED,
    binned_losses,
    tiny_generator,
    tiny_process,
)
from latentlab.training import RunDir, TrainConfig, train
from latentlab.training.rundir import Mode, read_metrics, stage_mode
from latentlab.training.skeleton import run_skeleton

log = logging.getLogger("latentlab")
RESULT, PLOT = "scaling.json", "scaling.png"
T_BINS = 4
"""t-bins of the per-bin losses (the coupled recipe's default `t_bins`)."""
OVERFIT = 1.2
"""A held-out loss this many times the training loss is reported as overfitting."""


@dataclass
class ScalingConfig:
    """Settings of `latentlab scaling` (dumped to OUT/config.yaml)."""

    widths: tuple[int, ...] = (32, 64, 128)
    """Widths of the tiny generators the law is fitted on (at least 3, increasing)."""
    predict: int = 256
    """Width whose held-out loss is predicted (larger than every fitted width)."""
    verify: bool = False
    """Also train the `predict` width and report predicted vs actual loss."""
    family: Literal["auto", "flow", "ddpm", "vpsde", "ar"] = "auto"
    """Tiny generator family: auto is flow for continuous latents, ar for token indices."""
    depth: int = 2
    """Residual blocks (MLP denoiser) or transformer blocks (ar) of every width."""
    steps: int = 1000
    """Optimizer steps per width (equal for all)."""
    batch_size: int = 128
    """Items per optimizer step."""
    lr: float = 2e-3
    """Peak learning rate (AdamW, linear warmup then cosine decay to a tenth)."""
    warmup: int = 100
    """Linear warmup steps."""
    ema: float = 0.995
    """Decay of the weight average that is scored; 0 scores the live weights."""
    precision: Literal["bf16", "fp32"] = "fp32"
    """Training precision; scoring always runs in fp32."""
    seed: int = 0
    """Seeds every width's initialisation, data order and training draws alike."""
    heldout_fraction: float = 0.1
    """Share of the cache's items (its last ones) held out for scoring, when no test cache."""
    eval_draws: int = 32
    """(t, noise) draws per held-out item for continuous processes."""

    def __post_init__(self):
        widths = list(self.widths)
        if len(widths) < 3 or widths != sorted(set(widths)) or widths[0] < 1:
            raise ValueError(f"widths: need at least 3 increasing positive widths, got {widths}")
        if self.predict <= widths[-1]:
            raise ValueError(f"predict: must exceed the largest width {widths[-1]}, got "
                             f"{self.predict}")
        for name in ("depth", "steps", "batch_size", "eval_draws"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not 0 < self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction: must be in (0, 1), got {self.heldout_fraction}")
        self.train_config()  # validates lr, warmup, ema

    def train_config(self) -> TrainConfig:
        """The loop settings of every width: no mid-run evaluation; a checkpoint every quarter
        (only the latest kept), so a killed study resumes."""
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr,
                           warmup=self.warmup, ema=self.ema, precision=self.precision,
                           seed=self.seed, channels_last=False, log_every=max(1, self.steps // 10),
                           eval_every=0, checkpoint_every=max(1, self.steps // 4),
                           keep_checkpoints=1)


@dataclass
class WidthRun:
    """What one width's run records in its config.yaml (a resumed run must match it)."""

    cache: str
    """The latent cache trained on (its path when the run was made)."""
    cache_fingerprint: str
    """Fingerprint of that cache's record: a resumed run must train on the same items."""
    train_items: int
    """Items trained on (the cache minus the held-out tail)."""
    family: str
    """Resolved tiny generator family."""
    width: int
    """Width of this run's tiny generator."""
    depth: int
    """Its depth."""
    train: TrainConfig
    """Loop settings."""


class FlatItems(LatentlabDataset):
    """Items `indices` of a dataset with each item flattened: (N, *S) -> (N, D), labels kept.

    The tiny MLP denoiser takes flat latents, and the tiny transformer flat token sequences.
    """

    def __init__(self, data: LatentlabDataset, indices: np.ndarray):
        self.data, self.indices = data, np.asarray(indices, dtype=np.int64)
        self.shape = (math.prod(data.shape),)
        self.class_names, self.name = data.class_names, data.name

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, i: int) -> tuple[torch.Tensor, int]:
        batch = self.__getitems__([i])
        return batch.x[0], int(batch.y[0])

    def __getitems__(self, indices: list[int]) -> Batch:
        batch = self.data.__getitems__(self.indices[np.asarray(indices, dtype=np.int64)].tolist())
        return Batch(rearrange(batch.x, "b ... -> b (...)"), batch.y)


def open_items(cache: str | Path, test_cache: str | Path | None, heldout_fraction: float
               ) -> tuple[LatentCache, FlatItems, FlatItems, str]:
    """The cache, its training items, the held-out items, and a description of the latter."""
    data = LatentCache(cache)
    if test_cache is None:
        n_held = max(1, round(len(data) * heldout_fraction))
        if len(data) - n_held < 1:
            raise DataError(f"{cache}: {len(data)} items are too few to hold some out")
        held = FlatItems(data, np.arange(len(data) - n_held, len(data)))
        return (data, FlatItems(data, np.arange(len(data) - n_held)), held,
                f"last {n_held} of {len(data)} cache items")
    test = LatentCache(test_cache)
    if (test.kind, test.shape) != (data.kind, data.shape):
        raise DataError(f"{test_cache}: holds {test.kind} {list(test.shape)}, the training "
                        f"cache {data.kind} {list(data.shape)}")
    return (data, FlatItems(data, np.arange(len(data))), FlatItems(test, np.arange(len(test))),
            f"{len(test)} items of {test_cache}")


def resolve_family(family: str, data: LatentCache) -> str:
    """'auto' -> flow or ar by the cache's kind; a family that cannot model it -> ConfigError."""
    if family == "auto":
        return "ar" if data.kind == "indices" else "flow"
    if (family == "ar") != (data.kind == "indices"):
        need = "token indices" if family == "ar" else "continuous latents"
        raise ConfigError(f"family: {family} models {need}, but {data.path} holds {data.kind}")
    return family


@torch.no_grad()
def heldout_loss(model: torch.nn.Module, process: Process | None, data: LatentlabDataset,
                 draws: int) -> float:
    """Mean held-out loss in fp32: the process's per-item MSE averaged over `draws` seeded
    (t, noise) draws per item, or (process None) the exact NLL in nats per token."""
    model.eval()
    device = next(model.parameters()).device
    if process is None:
        total, count = 0.0, 0
        for batch in eval_batches(data, device):
            total -= float(model.log_prob(batch.x).sum())  # x: (B, D) tokens
            count += batch.x.numel()
        return total / count
    g = torch.Generator(device).manual_seed(EVAL_SEED)
    total = 0.0
    for _ in range(draws):  # same items in the same order each pass: the same draws per width
        for batch in eval_batches(data, device):
            total += float(process.loss(model, batch.x.float(), None, generator=g).per_item.sum())
    return total / (draws * len(data))


def run_width(width: int, cfg: ScalingConfig, family: str, data: LatentCache, train_items:
              FlatItems, heldout: FlatItems, out: Path, mode: Mode) -> dict:
    """Train (or, resuming, finish) the tiny generator of one width; score it held out."""
    vocab = int(data.source.get("codebook_size", "0")) if family == "ar" else 0
    if family == "ar" and vocab < 1:
        raise DataError(f"{data.path}: a token cache without a codebook_size in its source")
    record = WidthRun(str(data.path), data.fingerprint(), len(train_items), family, width,
                      cfg.depth, cfg.train_config())
    path = out / f"width-{width}"

    def body(run: RunDir, text: str) -> dict:
        model = tiny_generator(data.shape, width, cfg.depth, vocab)
        process = None if family == "ar" else tiny_process(family)
        objective = (ARObjective(model, None, 0.0) if process is None
                     else ProcessObjective(model, process, None, 0.0))
        log.info("width %d: %d parameters, %d steps", width, num_parameters(model), cfg.steps)
        result = train(objective, train_items, record.train, run, text)
        scores = score_width(width, result.eval_model, process, heldout, run.path,
                             len(train_items), cfg.eval_draws)
        return {"width": width, "parameters": num_parameters(model), **scores}

    # every width starts from the same seed; the cache may have moved, not changed
    return run_skeleton(record, path, stage_mode(path, mode), body, seed=cfg.seed,
                        resume_skip=("cache",), result=None)


def score_width(width: int, model: torch.nn.Module, process: Process | None,
                heldout: FlatItems, run: Path, train_items: int, draws: int) -> dict:
    """The held-out loss of one width's trained model, its last training loss and (continuous
    processes) its held-out losses per t-bin."""
    loss = heldout_loss(model, process, heldout, draws)
    train_loss = last_training_loss(run)
    log.info("width %d: held-out loss %.6g (last training loss %s)", width, loss,
             "none" if train_loss is None else f"{train_loss:.6g}")
    if train_loss is not None and loss > OVERFIT * train_loss:
        log.warning("width %d overfits its %d training items (held-out loss %.4g, training loss "
                    "%.4g); the law assumes loss falls with size: fewer --steps or more data",
                    width, train_items, loss, train_loss)
    binned = None
    if process is not None:  # per t-bin, the quantity the coupled recipe extrapolates
        items = heldout.__getitems__(list(range(len(heldout)))).x.float()
        binned = binned_losses(process, model.eval(), items, T_BINS).tolist()
    return {"loss": loss, "train_loss": train_loss, "binned": binned}


def last_training_loss(run: Path) -> float | None:
    """The last logged training loss of a run (from metrics.jsonl, so a resumed finished run
    has one too); None when there is none or it is not finite."""
    for record in reversed(read_metrics(run)):
        value = next((v for k, v in record.items() if k.startswith("loss/")), None)
        if value is not None:
            return value if isinstance(value, float) and math.isfinite(value) else None
    return None


def _finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity: a loss that is not finite is written as null."""
    return value if value is not None and math.isfinite(value) else None


def scaling_study(cfg: ScalingConfig, cache: str | Path, out: str | Path, mode: Mode = "new",
                  test_cache: str | Path | None = None) -> dict:
    """Run the study `cfg` on a latent cache; write OUT/scaling.json and OUT/scaling.png.

    Returns:
        {"widths", "parameters", "losses", "train_losses", "fit" (E, A, alpha, n_ref, residuals)
        or None, "fit_error" (why there is no fit) or None, "predict": {"width", "parameters",
        "predicted_loss", "actual_loss", "relative_error", "no_gain_relative_error" (the error
        of taking the largest fitted width's loss as the prediction)} (None where not known),
        "setup" (the settings, the cache, what was held out)}.
    """
    data, train_items, heldout, held_text = open_items(cache, test_cache, cfg.heldout_fraction)
    family = resolve_family(cfg.family, data)

    def body(run: RunDir, text: str) -> dict:
        def train_width(width: int) -> dict:
            return run_width(width, cfg, family, data, train_items, heldout, run.path, run.mode)

        points = [train_width(w) for w in cfg.widths]
        return _fit_and_verify(cfg, cache, data, family, points, held_text, train_width,
                               run.path)

    # each width is a run of its own, with its own checkpoints and resume check
    return run_skeleton(cfg, out, mode, body, resume_skip=None, result=RESULT,
                        checkpointed=False, subdirs=())


def _fit_and_verify(cfg: ScalingConfig, cache: str | Path, data: LatentCache, family: str,
                    points: list[dict], held_text: str, train_width, out: Path) -> dict:
    """Fit the law to the widths' `points`, predict, with `verify` train the predicted width
    (`train_width(width)`) and compare; draws OUT/scaling.png and returns the result."""
    n = [p["parameters"] for p in points]
    losses = [p["loss"] for p in points]
    vocab = int(data.source.get("codebook_size", "0")) if family == "ar" else 0
    n_big = num_parameters(tiny_generator(data.shape, cfg.predict, cfg.depth, vocab))
    law: PowerLaw | None = None
    fit_error = None
    try:
        law = fit_power_law(n, losses)
    except IllPosedFit as e:
        fit_error = str(e)
        log.warning("scaling fit refused: %s (the result holds fit: null)", e)
    predicted = law(n_big) if law is not None else None
    actual = None
    verified = None
    if cfg.verify:
        verified = train_width(cfg.predict)
        actual = verified["loss"]
    error = (predicted - actual) / actual if predicted is not None and actual else None
    # the yardstick: predicting no gain past the largest fitted width, L(N_big) = L(N_K)
    naive = (losses[-1] - actual) / actual if actual else None
    result = {
        "widths": list(cfg.widths), "parameters": n, "losses": [_finite(v) for v in losses],
        "train_losses": [p["train_loss"] for p in points],
        "fit": law.as_dict() if law is not None else None, "fit_error": fit_error,
        "predict": {"width": cfg.predict, "parameters": n_big, "predicted_loss": predicted,
                    "actual_loss": _finite(actual), "relative_error": _finite(error),
                    "no_gain_relative_error": _finite(naive)},
        "per_bin": per_bin(points, n_big, verified),
        "setup": {"cache": str(cache), "kind": data.kind, "item_shape": list(data.shape),
                  "family": family, "loss": "nll nats/token" if family == "ar"
                  else f"{family} mse", "heldout": held_text,
                  "eval_draws": cfg.eval_draws if family != "ar" else 0}
        | {k: v for k, v in C.to_dict(cfg).items()
           if k not in ("widths", "predict", "verify", "family", "eval_draws")},
    }
    save_plot(result, law, out / PLOT)
    return result


def per_bin(points: list[dict], n_big: int, verified: dict | None) -> dict | None:
    """Per t-bin (continuous processes): L(N) fitted to the widths' held-out losses in the bin,
    its prediction at N_big and rho = sqrt(L(N_big) / L_largest), as the coupled recipe
    computes them, and, verified, the actual loss, the error and the rho it implies."""
    if points[0]["binned"] is None:
        return None
    n = [p["parameters"] for p in points]
    found: dict = {"t_bins": T_BINS, "losses": [p["binned"] for p in points], "predicted": [],
                   "rho": [], "fit_error": []}
    for b in range(T_BINS):
        losses = [p["binned"][b] for p in points]
        try:
            law = fit_power_law(n, losses)
        except IllPosedFit as e:
            found["predicted"].append(None)
            found["rho"].append(None)
            found["fit_error"].append(str(e))
            continue
        found["predicted"].append(law(n_big))
        found["rho"].append(rho_squared(law, n_big, losses[-1]) ** 0.5)
        found["fit_error"].append(None)
    if verified is not None:
        actual, largest = verified["binned"], points[-1]["binned"]
        found["actual"] = actual
        found["error"] = [None if p is None else (p - a) / a
                          for p, a in zip(found["predicted"], actual, strict=True)]
        found["rho_implied"] = [math.sqrt(min(1.0, a / t))
                                for a, t in zip(actual, largest, strict=True)]
    return found
