"""The DAE paper's toy table (`004_*.txt`, section 6.1, Table 2): how the encoder/decoder balance
and the decoupled two-stage training shape a VAE's latent on a Gaussian mixture.

Data: K clusters whose centres are the K-th roots of unity, isotropic 2-D noise of standard
deviation `std`, lifted to D dims by an orthogonal map (`latentlab.data.builtin.mixture`); the
label is the cluster index. Model: a KL-VAE with a 2-D latent and 3-layer fully connected encoder
and decoder (`tokenizers.mlp`), trained by `recipes.train.train_tokenizer`, plain or DAE.

Per seed s (mixture seed = training seed = s) the study trains one model and measures on the
test split, with the posterior means as latents:

    latent_acc      1-NN classifier fitted on the train split's latents, scored on the test
                    split's latents (the paper's "nearest neighbor classification accuracy from
                    the 2D latent")
    recon_acc       1-NN classifier fitted on the true train data (D dims), scored on the
                    reconstructions of the test split: does a reconstruction land in its
                    item's cluster? (the paper's "... from the 10D reconstruction")
    recon_mse       mean squared error of those reconstructions per element
and two references:
    bayes_acc       nearest true centre: the Bayes classifier of equal-weight isotropic clusters,
                    a ceiling for both accuracies (latent and reconstruction are functions of
                    the item, so they carry no more label information than it)
    data_acc        1-NN on the raw data (train split -> test split): what the 1-NN protocol
                    gets from a faithful copy of the data (a latent that gathers each cluster
                    could beat it, up to bayes_acc)

Per-seed accuracies are fractions; the summary over seeds gives them in %. See
`docs/toy-mixture.md` for the protocol's reasons and the measured table beside the paper's.

Legend: N train items, M test items, D data dims, L latent dims (2), K clusters.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from latentlab.data import load_dataset
from latentlab.data.builtin import mixture_centres
from latentlab.data.config import DataConfig
from latentlab.metrics.latent import nearest_neighbour_accuracy
from latentlab.nn import num_parameters
from latentlab.recipes.config import DAEConfig
from latentlab.recipes.train import TokenizerRunConfig, train_tokenizer
from latentlab.tokenizers.bottlenecks.kl import KLConfig
from latentlab.tokenizers.mlp import MLPConfig
from latentlab.tokenizers.tokenizer import Tokenizer, TokenizerConfig
from latentlab.training import RunDir, TrainConfig
from latentlab.training.rundir import Mode, stage_mode
from latentlab.training.skeleton import run_skeleton

log = logging.getLogger("latentlab")
RESULT = "toy.json"
ACCURACIES = ("latent_acc", "recon_acc", "bayes_acc", "data_acc")


@dataclass
class ToyConfig:
    """Settings of `latentlab toy-mixture` (dumped to OUT/config.yaml)."""

    k: int = 8
    """Clusters, centred on the unit circle (the paper: 8)."""
    d: int = 10
    """Dimension the 2-D mixture is lifted to (the paper: 10)."""
    std: float = 0.5
    """Per-axis standard deviation of each cluster (the paper: variance 0.25, so 0.5)."""
    n: int = 2000
    """Training items per seed; the test split has n // 4."""
    seeds: int = 5
    """Independent repetitions: seed s draws the mixture and trains the model."""
    first_seed: int = 0
    """Seed of the first repetition; they run first_seed, first_seed + 1, ..."""
    encoder_hidden: tuple[int, ...] | int = (128, 128)
    """Encoder hidden widths; two entries make the paper's 3-layer network, and one number is
    both of them."""
    decoder_hidden: tuple[int, ...] | int = (128, 128)
    """Decoder hidden widths, as for encoder_hidden."""
    dae: bool = False
    """Train as a DAE: stage 1 with a weak decoder, stage 2 a fresh full decoder on the frozen
    encoder (equal total steps)."""
    weak_width: float = 0.5
    """Width multiplier of the DAE's stage-1 decoder (the paper halves the width)."""
    weak_dropout: float = 0.0
    """Dropout in the DAE's stage-1 decoder (the paper's other way to weaken it)."""
    stage1_fraction: float = 0.5
    """Share of the steps spent in DAE stage 1 (the paper: half)."""
    latent: int = 2
    """Latent dimensions (the paper: 2)."""
    kl_weight: float | None = None
    """Weight of the KL term next to the per-element reconstruction MSE; None takes 1 / d, the
    vanilla VAE's sum-of-squares + KL loss (a Gaussian decoder of variance 1/2)."""
    steps: int = 2000
    """Optimizer steps per model (both DAE stages together)."""
    lr: float = 2e-3
    """Peak learning rate (AdamW, 100-step warmup, cosine decay to a tenth)."""
    batch_size: int = 128
    """Items per optimizer step."""
    ema: float = 0.0
    """Decay of the weight average that is evaluated; 0 evaluates the live weights."""

    def __post_init__(self):
        for name in ("encoder_hidden", "decoder_hidden"):  # one number: both hidden layers
            widths = getattr(self, name)
            setattr(self, name, (widths, widths) if isinstance(widths, int) else tuple(widths))
        for name in ("k", "n", "seeds", "latent", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.k < 2:
            raise ValueError(f"k: need at least 2 clusters to classify, got {self.k}")
        if self.n < 4:
            raise ValueError(f"n: need at least 4 items (the test split is n // 4), got {self.n}")
        if self.d < 2:
            raise ValueError(f"d: must be >= 2 (the mixture is 2-D), got {self.d}")
        if self.std < 0:
            raise ValueError(f"std: must be >= 0, got {self.std}")
        if self.kl_weight is not None and self.kl_weight < 0:
            raise ValueError(f"kl_weight: must be >= 0, got {self.kl_weight}")
        self.run_config(self.first_seed)  # validates widths, DAE settings, lr, ema

    @property
    def kl(self) -> float:
        """The KL weight in use: `kl_weight`, or 1 / d."""
        return 1.0 / self.d if self.kl_weight is None else self.kl_weight

    def spec(self, seed: int) -> str:
        return f"mixture:k={self.k},d={self.d},std={self.std},n={self.n},seed={seed}"

    def model_config(self) -> TokenizerConfig:
        """The VAE: fully connected encoder and decoder around a KL bottleneck."""
        return TokenizerConfig(
            arch=MLPConfig(encoder_hidden=tuple(self.encoder_hidden),
                           decoder_hidden=tuple(self.decoder_hidden)),
            latent_channels=self.latent, bottleneck=KLConfig(weight=self.kl))

    def run_config(self, seed: int) -> TokenizerRunConfig:
        """The `train-tokenizer` configuration of repetition `seed`."""
        # fp32: bf16 autocast buys nothing for layers this small and rounds the 1-NN geometry;
        # one log line and one checkpoint per run, no mid-run evaluation
        train = TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr,
                            warmup=min(100, self.steps // 10), ema=self.ema, precision="fp32",
                            channels_last=False, seed=seed, log_every=self.steps, eval_every=0,
                            checkpoint_every=self.steps, keep_checkpoints=1)
        return TokenizerRunConfig(
            data=DataConfig(spec=self.spec(seed)), recipe="dae" if self.dae else "baseline",
            dae=DAEConfig(stage1_fraction=self.stage1_fraction, weak_width=self.weak_width,
                          weak_dropout=self.weak_dropout),
            model=self.model_config(), train=train)


@torch.no_grad()
def measure(tokenizer: Tokenizer, train, test, centres: np.ndarray) -> dict[str, float]:
    """The figures of one trained model (see the module docstring), accuracies as fractions.

    Args:
        tokenizer: the trained VAE, evaluated in eval mode (posterior means).
        train, test: the mixture splits it was trained and is scored on.
        centres: (K, D) the true cluster centres.
    """
    tokenizer.eval()
    device = tokenizer.latent_shift.device
    x_tr = torch.as_tensor(np.asarray(train.data), dtype=torch.float32)  # (N, D)
    x_te = torch.as_tensor(np.asarray(test.data), dtype=torch.float32)  # (M, D)
    y_tr = torch.as_tensor(np.asarray(train.labels))  # (N,)
    y_te = torch.as_tensor(np.asarray(test.labels))  # (M,)
    z_tr = tokenizer.encode(x_tr.to(device)).latent.float().cpu()  # (N, L) posterior means
    z_te = tokenizer.encode(x_te.to(device)).latent.float().cpu()  # (M, L)
    x_hat = tokenizer.decode(z_te.to(device)).float().cpu()  # (M, D)
    nearest = torch.cdist(x_te.double(), torch.as_tensor(centres)).argmin(1)  # (M,)
    return {
        "latent_acc": nearest_neighbour_accuracy(z_tr, y_tr, z_te, y_te),
        "recon_acc": nearest_neighbour_accuracy(x_tr, y_tr, x_hat, y_te),
        "recon_mse": float((x_hat - x_te).pow(2).mean()),
        "bayes_acc": float((nearest == y_te).double().mean()),
        "data_acc": nearest_neighbour_accuracy(x_tr, y_tr, x_te, y_te),
    }


def run_seed(cfg: ToyConfig, seed: int, run_dir: Path, mode: Mode = "new") -> dict[str, float]:
    """Train (or, resuming, finish) repetition `seed` into `run_dir` and measure it."""
    metrics = train_tokenizer(cfg.run_config(seed), run_dir, stage_mode(run_dir, mode))
    tokenizer = Tokenizer.load(run_dir)
    train = load_dataset(cfg.spec(seed), "train")
    test = load_dataset(cfg.spec(seed), "test")
    figures = measure(tokenizer, train, test, mixture_centres(cfg.k, cfg.d, seed))
    figures["mean_item_mse"] = float(metrics["mean_image_mse"])
    log.info("seed %d: latent 1-NN %.1f %%, reconstruction 1-NN %.1f %%, MSE %.4g "
             "(Bayes %.1f %%)", seed, 100 * figures["latent_acc"], 100 * figures["recon_acc"],
             figures["recon_mse"], 100 * figures["bayes_acc"])
    return {"seed": seed, **figures}


def summarise(runs: list[dict]) -> dict:
    """Mean and std over seeds: accuracies in %, MSEs as they are.

    The std is the sample std (ddof 1), the usual "mean (std)" of a table over seeds; 0 for a
    single seed.
    """
    def stats(key: str, scale: float) -> dict[str, float]:
        values = np.array([r[key] for r in runs]) * scale
        std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        return {"mean": float(values.mean()), "std": std}

    summary = {key: stats(key, 100.0) for key in ACCURACIES}
    summary |= {key: stats(key, 1.0) for key in ("recon_mse", "mean_item_mse")}
    return summary


def run_toy(cfg: ToyConfig, out: str | Path | None = None, mode: Mode = "new") -> dict:
    """Train and measure `cfg.seeds` models; returns (and writes OUT/toy.json).

    Args:
        out: run directory to keep each seed's run in (OUT/seed-S), the config and the result.
            None trains in a temporary directory that is then deleted.
        mode: new, resume (finish the seeds a killed study left) or overwrite.

    Returns:
        {"config": the ToyConfig as a dict, "runs": per seed {"seed", "latent_acc",
        "recon_acc", "recon_mse", "bayes_acc", "data_acc", "mean_item_mse"} (fractions),
        "summary": per figure {"mean", "std"} over seeds (accuracies in %), "parameters":
        {"encoder", "decoder"}}.
    """
    def body(run: RunDir, text: str) -> dict:
        seeds = range(cfg.first_seed, cfg.first_seed + cfg.seeds)
        runs = [run_seed(cfg, s, run.path / f"seed-{s}", run.mode) for s in seeds]
        model = Tokenizer(cfg.model_config(), cfg.d)
        config = asdict(cfg) | {"encoder_hidden": list(cfg.encoder_hidden),
                                "decoder_hidden": list(cfg.decoder_hidden), "kl_weight": cfg.kl}
        return {"config": config, "runs": runs, "summary": summarise(runs),
                "parameters": {part: num_parameters(getattr(model, part))
                               for part in ("encoder", "decoder")}}

    scratch = tempfile.TemporaryDirectory(prefix="latentlab-toy-") if out is None else None
    with scratch or contextlib.nullcontext():
        root = out if out is not None else scratch.name
        # each seed is a run of its own; a resumed study may add seeds
        return run_skeleton(cfg, root, mode, body, resume_skip=("seeds",), result=RESULT,
                            checkpointed=False, subdirs=())
