"""`latentlab train-codec`: a discrete tokenizer, then an unconditional autoregressive prior on
its tokens, into one codec run (layout in `codec.model`).

Both stages are the ordinary `train_tokenizer` and `train_generator`. The one codec-specific
step sits between them: the tokenizer's latent caches are written *without labels* before the
prior trains, so `train_generator` builds an unconditional prior (num_classes = 0). A codec does
not know an image's class; a class-conditional prior used through its null class would have
learnt p(tokens) from only the label-dropout share of its training batches.

Runs in one process (not under torchrun).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from latentlab.codec.model import MANIFEST, PRIOR_DIR, TOKENIZER_DIR, CodecModel, manifest_for
from latentlab.data import load_dataset
from latentlab.data.base import UNLABELLED, Batch, LatentlabDataset
from latentlab.errors import ConfigError
from latentlab.generation.config import GeneratorConfig, GeneratorRunConfig
from latentlab.generation.encode import default_cache_path, encode_dataset, source_record
from latentlab.generation.train import train_generator
from latentlab.generators.autoregressive import ARConfig
from latentlab.io import write_json
from latentlab.recipes.presets import TOKENIZER_PRESETS
from latentlab.recipes.train import TokenizerRunConfig, train_tokenizer
from latentlab.tokenizers.tokenizer import Tokenizer
from latentlab.training.config import TrainConfig
from latentlab.training.rundir import Mode, RunDir, stage_mode
from latentlab.training.skeleton import run_skeleton

log = logging.getLogger("latentlab")
DISCRETE = ("vq", "lfq", "fsq", "gumbel")
CODEC_PRESETS = sorted(name for name in TOKENIZER_PRESETS
                       if name.rsplit("-", 1)[1] in DISCRETE and not name.startswith("mixture"))
"""Tokenizer presets a codec can start from: discrete bottlenecks on image datasets."""


def _prior_train() -> TrainConfig:
    # small token grids (16 to 64 tokens): short steps, so a few thousand of them take minutes
    return TrainConfig(steps=2000, batch_size=128, lr=1e-3, warmup=100, eval_every=500,
                       checkpoint_every=500, log_every=100)


@dataclass
class PriorConfig:
    """The autoregressive prior of a codec (unconditional; it models the tokenizer's tokens)."""

    transformer: ARConfig = field(default_factory=ARConfig)
    """The decoder-only transformer."""
    train: TrainConfig = field(default_factory=_prior_train)
    """The prior's training loop."""

    @staticmethod
    def upgrade(data: dict) -> dict:
        """Before 2026-12 the transformer had a patch_size, unused here."""
        if isinstance(data.get("transformer"), dict):
            data["transformer"] = {k: v for k, v in data["transformer"].items()
                                   if k != "patch_size"}
        return data


@dataclass
class CodecRunConfig:
    """Everything `train-codec` needs: the tokenizer run's config and the prior's."""

    tokenizer: TokenizerRunConfig = field(
        default_factory=lambda: copy.deepcopy(TOKENIZER_PRESETS["digits-vq"]))
    """The tokenizer, trained first (its bottleneck must be discrete: vq, lfq, fsq, gumbel or
    hvq)."""
    prior: PriorConfig = field(default_factory=PriorConfig)
    """The prior, trained on the tokenizer's tokens of the same dataset."""

    def __post_init__(self):
        kind = self.tokenizer.model.bottleneck.kind
        if kind not in DISCRETE:
            raise ValueError(f"tokenizer.model.bottleneck.kind: the codec needs a discrete "
                             f"bottleneck ({', '.join(DISCRETE)}), got '{kind}'")
        if self.tokenizer.model.arch.kind == "mlp":
            raise ValueError("tokenizer.model.arch: the codec codes images (conv, diffusers), got "
                             f"'{self.tokenizer.model.arch.kind}'")


class Unlabelled(LatentlabDataset):
    """A dataset's items with their labels removed (label -1, no class names)."""

    def __init__(self, data: LatentlabDataset):
        self.data, self.name, self.shape = data, data.name, data.shape
        self.class_names = []

    def __len__(self) -> int:
        return len(self.data)

    def load(self, i: int) -> tuple[torch.Tensor, int]:
        return self.data.load(i)[0], UNLABELLED

    def __getitems__(self, indices: list[int]) -> Batch:
        batch = self.data.__getitems__(indices)
        return Batch(batch.x, torch.full_like(batch.y, UNLABELLED), batch.skipped)


def write_unlabelled_caches(tokenizer_run: Path, spec: str) -> None:
    """Both splits encoded through the tokenizer, without labels, where `train_generator`
    looks for its caches (replacing any: a resumed tokenizer has new weights)."""
    tokenizer = Tokenizer.load(tokenizer_run)
    source = source_record(str(tokenizer_run), tokenizer)
    for split in ("train", "test"):
        path = default_cache_path(str(tokenizer_run), spec, split)
        encode_dataset(tokenizer, Unlabelled(load_dataset(spec, split)), path, source,
                       overwrite=True)


def train_codec(cfg: CodecRunConfig, out: str | Path, mode: Mode = "new") -> dict:
    """Train the tokenizer, then the prior, into codec run `out`; returns its metrics."""

    def body(run: RunDir, text: str) -> dict:
        tokenizer_run, prior_run = run.path / TOKENIZER_DIR, run.path / PRIOR_DIR
        spec = cfg.tokenizer.data.spec
        log.info("codec: training the tokenizer into %s", tokenizer_run)
        tok_metrics = train_tokenizer(cfg.tokenizer, tokenizer_run,
                                      stage_mode(tokenizer_run, run.mode))
        write_unlabelled_caches(tokenizer_run, spec)

        log.info("codec: training the prior into %s", prior_run)
        prior_cfg = GeneratorRunConfig(
            tokenizer=str(tokenizer_run), data=copy.deepcopy(cfg.tokenizer.data),
            generator=GeneratorConfig(family="ar", network=cfg.prior.transformer,
                                      label_dropout=0.0),
            train=cfg.prior.train)
        try:
            prior_metrics = train_generator(prior_cfg, prior_run,
                                            stage_mode(prior_run, run.mode))
        except ConfigError as e:
            raise ConfigError(f"prior: {e}") from None

        model = CodecModel.load(tokenizer=tokenizer_run, prior=prior_run)
        bits = prior_metrics["test"]["bits_per_token"] * model.prior.seq_len
        metrics = {"tokenizer": tok_metrics["test"], "prior": prior_metrics["test"],
                   "fingerprint": model.fingerprint_hex,
                   "estimated_bits_per_tile": bits,
                   "estimated_bpp": bits / (model.tile[0] * model.tile[1])}
        write_json(run.path / "metrics.json", metrics)
        write_json(run.path / MANIFEST, manifest_for(model, spec))  # last: marks a finished run
        log.info("wrote codec run %s (model %s)", run.path, model.fingerprint_hex)
        return metrics

    # the stages are runs of their own, with their own checkpoints and resume checks
    return run_skeleton(cfg, out, mode, body, result=None, checkpointed=False, subdirs=(),
                        resume_skip=("tokenizer.train.steps", "prior.train.steps"))
