"""`latentlab train-tokenizer`: train a decomposer and leave a self-describing run directory.

The run directory gets, besides what every run has (see `training.rundir`):
    RUN/tokenizer/           the trained tokenizer (EMA weights + latent statistics), which
                             `Tokenizer.load(RUN)` reads
    RUN/metrics.json         held-out figures of that tokenizer and the mean-image baseline
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from latentlab import config as C
from latentlab import pixels
from latentlab.config import switched
from latentlab.data import load_dataset
from latentlab.data.base import LatentlabDataset, eval_batches
from latentlab.data.config import DataConfig
from latentlab.data.text import TextTokenizer
from latentlab.errors import ConfigError
from latentlab.generation.config import TextConfig
from latentlab.generation.prompts import Prompted, prompt_tokenizer
from latentlab.generators.denoisers.dit import DiT
from latentlab.metrics.perceptual import FrozenFeatures
from latentlab.nn import num_parameters
from latentlab.nn.exported import load_program
from latentlab.recipes.baseline import LossConfig, evaluate_tokenizer
from latentlab.recipes.config import CoupledConfig, DAEConfig
from latentlab.recipes.coupled import LatentCoupling
from latentlab.recipes.coupled_tokens import TokenCoupling
from latentlab.recipes.objective import TokenizerObjective
from latentlab.recipes.tiny import BigGenerator
from latentlab.tokenizers import diffusers_ae
from latentlab.tokenizers.bottlenecks import build_bottleneck
from latentlab.tokenizers.tokenizer import Tokenizer, TokenizerConfig
from latentlab.training import RunDir, TrainConfig, train
from latentlab.training import distributed as D
from latentlab.training.flops import first_batch, mean_step_flops
from latentlab.training.rundir import Mode
from latentlab.training.skeleton import run_skeleton

log = logging.getLogger("latentlab")


@dataclass
class TokenizerRunConfig:
    """Everything `train-tokenizer` needs."""

    data: DataConfig = field(default_factory=DataConfig)
    """Where the training data comes from."""
    recipe: Literal["baseline", "dae", "coupled", "coupled+dae"] = "baseline"
    """How the decomposer is trained (see `latentlab.recipes.config`)."""
    dae: DAEConfig | None = None
    """Stage split and weak decoder: only with recipes dae and coupled+dae (their defaults when
    not given; left out with the other recipes)."""
    coupled: CoupledConfig | None = None
    """Tiny generators, predictability regularizer and scaling fit: only with recipes coupled and
    coupled+dae (their defaults when not given; left out with the other recipes)."""
    init: str = ""
    """Start from this diffusers AutoencoderKL / VQModel folder (fine-tuning it): its weights,
    and its architecture in place of model.arch, latent_channels and the bottleneck kind
    (model.bottleneck's settings apply when its kind is the folder's)."""
    model: TokenizerConfig = field(default_factory=TokenizerConfig)
    """The tokenizer's architecture and bottleneck."""
    loss: LossConfig = field(default_factory=LossConfig)
    """How reconstructions are scored."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """The training loop."""

    def __post_init__(self):
        self.dae = switched(self.dae, self.recipe.endswith("dae"), DAEConfig)
        self.coupled = switched(self.coupled, self.recipe.startswith("coupled"), CoupledConfig)


def mean_image_mse(train_data, test_data) -> float:
    """MSE of predicting every test item by the mean training item: the floor to beat."""
    mean = torch.stack([b.x.sum(0) for b in eval_batches(train_data, "cpu")]).sum(0)
    mean = mean / len(train_data)
    errors = [(b.x - mean).pow(2).flatten(1).mean(1) for b in eval_batches(test_data, "cpu")]
    return float(torch.cat(errors).mean())


def build_tokenizer(cfg: TokenizerRunConfig, item_shape: tuple[int, ...]) -> TokenizerRunConfig:
    """The config (with `init`, the folder's architecture), checked against the data's item
    shape."""
    if cfg.init:
        cfg = dataclasses.replace(cfg, model=init_model(cfg.init, cfg.model, item_shape[0]))
    try:
        Tokenizer(cfg.model, item_shape[0]).check_input(item_shape)
    except ValueError as e:
        raise ConfigError(f"{'init' if cfg.init else 'model'}.{e}") from None
    return cfg


def init_model(folder: str, model: TokenizerConfig, channels: int) -> TokenizerConfig:
    """The architecture of the diffusers folder `folder` with the bottleneck settings of
    `model` when they are of the folder's kind; ConfigError unless it takes images of
    `channels` channels."""
    config = diffusers_ae.read_config(Path(folder))
    arch, latent, bottleneck, in_channels = diffusers_ae.architecture(config)
    if in_channels != channels:
        raise ConfigError(f"init: {folder} takes images of {in_channels} channels, the data "
                          f"has {channels}")
    if model.bottleneck.kind == bottleneck.kind:
        keep = {"codebook_size": bottleneck.codebook_size} if bottleneck.kind == "vq" else {}
        bottleneck = dataclasses.replace(model.bottleneck, **keep)
    return TokenizerConfig(arch=arch, latent_channels=latent, bottleneck=bottleneck)


def save_reconstructions(tokenizer: Tokenizer, data, path: Path, n: int = 32) -> None:
    """Originals (top rows) over reconstructions (bottom rows) of the first `n` items."""
    view = data.__getitems__(list(range(min(n, len(data)))))
    device = tokenizer.latent_shift.device
    with torch.no_grad():
        recon = tokenizer(view.x.to(device)).x_hat.float().cpu()
    pixels.save_grid(torch.cat([view.x, recon]), path, nrow=16, scale=4)


def coupled_prompts(cfg: TokenizerRunConfig, data: LatentlabDataset) -> TextTokenizer | None:
    """The tokenizer of the prompts a coupled recipe's tiny generators are conditioned on (see
    `coupled.condition`), trained on the training captions; None when they are unconditional."""
    if cfg.coupled is None or cfg.coupled.condition == "none":
        return None
    if not data.captioned:
        if cfg.coupled.condition == "text":
            raise ConfigError(f"coupled.condition: text, but {data.name} has no captions")
        return None
    return prompt_tokenizer(TextConfig(), data)


def big_generator(cfg: TokenizerRunConfig, latent: tuple[int, ...], num_classes: int,
                  prompts: TextTokenizer | None = None) -> BigGenerator:
    """What a coupled recipe extrapolates to: `coupled.big_parameters` (and `big_samples`), or
    the network `coupled.big_generator` (a generator run config) builds for this latent, its
    training samples (steps x batch) and, for a DiT, its config."""
    coupled = cfg.coupled
    if coupled.big_parameters and not coupled.big_generator:
        return BigGenerator(coupled.big_parameters, coupled.big_samples or math.inf)
    if not coupled.big_generator:
        raise ConfigError("coupled.big_parameters: a coupled recipe extrapolates to the big "
                          "generator's size; set it, or coupled.big_generator to its config")
    from latentlab.generation.config import GeneratorRunConfig
    from latentlab.generation.models import Modelled, build_models

    run = C.load(GeneratorRunConfig, coupled.big_generator)
    discrete = cfg.model.bottleneck.kind in ("vq", "lfq", "fsq", "gumbel")
    vocab = build_bottleneck(cfg.model.bottleneck, cfg.model.latent_channels).codebook_size or 0
    condition = "text" if prompts is not None else "class" if num_classes else "none"
    what = Modelled(latent[1:] if discrete else latent, "indices" if discrete else "latents",
                    num_classes if condition == "class" else 0, vocab, condition)
    network = build_models(run.generator, what, prompts)["model"]
    return BigGenerator(
        coupled.big_parameters or num_parameters(network),
        coupled.big_samples or run.train.steps * run.train.batch_size,
        network.cfg if isinstance(network, DiT) else None, num_classes)


def build_objective(cfg: TokenizerRunConfig, data, heldout=None,
                    prompts: TextTokenizer | None = None) -> TokenizerObjective:
    """The tokenizer and the parts its recipe adds (see `recipes.objective`); `heldout` (a
    dataset never trained on, e.g. the test split) gives a coupled recipe's held-out latents.
    With `prompts` (`coupled_prompts`) the tiny generators are text-conditioned and `data` and
    `heldout` are `Prompted` by them."""
    tokenizer = (Tokenizer.from_diffusers(cfg.init, cfg=cfg.model).train() if cfg.init
                 else Tokenizer(cfg.model, data.shape[0]))
    coupling = None
    if cfg.recipe.startswith("coupled"):
        latent = tokenizer.latent_shape(data.shape)
        family = cfg.coupled.family
        if family == "auto":
            family = "ar" if tokenizer.discrete else "flow"
        if (family == "ar") != tokenizer.discrete:
            raise ConfigError(f"coupled.family: '{family}' does not fit a "
                              f"{'discrete' if tokenizer.discrete else 'continuous'} latent "
                              "(ar for vq/lfq/fsq; flow, ddpm or vpsde otherwise)")
        if tokenizer.cfg.bottleneck.kind == "hvq":
            raise ConfigError("recipe: the coupled recipes pull each latent vector toward its "
                              "own token; hvq's latent holds two levels per position, so it "
                              "takes baseline or dae")
        big = big_generator(cfg, latent, data.num_classes, prompts)
        if tokenizer.discrete:
            coupling = TokenCoupling(cfg.coupled, tokenizer.bottleneck, latent, big.parameters,
                                     prompts)
        else:
            try:
                coupling = LatentCoupling(cfg.coupled, latent, family, big, cfg.train.steps,
                                          cfg.train.batch_size, prompts)
            except ValueError as e:
                raise ConfigError(f"coupled.{e}") from None
    dae = cfg.dae if cfg.recipe.endswith("dae") else None
    images = ids = None
    if coupling is not None and heldout is not None and cfg.coupled.heldout:
        items = heldout.__getitems__(list(range(min(cfg.coupled.heldout, len(heldout)))))
        images, ids = items.x, (items.y if prompts is not None else None)
    return TokenizerObjective(tokenizer, cfg.loss, dae, coupling, cfg.train.steps, images,
                              prompts is not None, ids, perceptual_features(cfg, data))


def perceptual_features(cfg: TokenizerRunConfig, data) -> FrozenFeatures | None:
    """The network of the perceptual loss, if it is on (ConfigError naming the field when it
    cannot serve this data)."""
    if not cfg.loss.perceptual:
        return None
    if len(data.shape) != 3:
        raise ConfigError(f"loss.perceptual: a perceptual distance compares images, this data "
                          f"is {tuple(data.shape)}")
    if not cfg.loss.perceptual_net:
        raise ConfigError("loss.perceptual_net: no network given; train-tokenizer and the "
                          "study export the data's self-supervised network when it is empty "
                          "(evaluation.perceptual.resolve_perceptual)")
    try:
        network = FrozenFeatures(load_program(cfg.loss.perceptual_net))
        with torch.no_grad():
            network(torch.zeros(2, *data.shape))
    except (ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"loss.perceptual_net: {first}") from None
    return network


def load_splits(cfg: TokenizerRunConfig) -> tuple[LatentlabDataset, LatentlabDataset,
                                                   TextTokenizer | None]:
    """The run's train and test data, `Prompted` when its tiny generators read prompts, and
    the tokenizer of those prompts (else None)."""
    data = load_dataset(cfg.data.spec, "train", skip_corrupt=cfg.data.skip_corrupt)
    test = load_dataset(cfg.data.spec, "test", skip_corrupt=cfg.data.skip_corrupt)
    prompts = coupled_prompts(cfg, data)
    if prompts is None:
        return data, test, None
    return Prompted(data, prompts), Prompted(test, prompts), prompts


def tokenizer_step_flops(cfg: TokenizerRunConfig) -> float:
    """Mean training FLOPs of one optimizer step of the tokenizer run `cfg` (every phase: the
    autoencoder, tiny generators, discriminator), on one batch of its data."""
    data, test, prompts = load_splits(cfg)
    cfg = build_tokenizer(cfg, data.shape)
    objective = build_objective(cfg, data, test, prompts)
    return mean_step_flops(objective, first_batch(data, cfg.train.batch_size), cfg.train.steps)


def recipe_record(cfg: TokenizerRunConfig, objective: TokenizerObjective) -> dict:
    """What metrics.json says of the recipe: DAE switch step, tiny sizes, scaling fits."""
    record: dict = {"recipe": cfg.recipe}
    if objective.weak_decoder is not None:
        record["dae_switch_step"] = int(objective.switch)
    if objective.coupling is not None:
        coupling = objective.coupling
        record |= {"tiny_parameters": coupling.sizes, "big_parameters": coupling.n_big,
                   "tiny_network": "ar" if objective.tokenizer.discrete else cfg.coupled.tiny,
                   "tiny_series": coupling.tracker.series,
                   "tiny_losses": coupling.tracker.averages().tolist(),
                   "scaling_fits": coupling.tracker.records} | coupling.summary()
    return record


def train_tokenizer(cfg: TokenizerRunConfig, out: str | Path, mode: Mode = "new") -> dict:
    """Train the tokenizer `cfg` describes into run directory `out`; returns final metrics."""
    world = D.setup(cfg.train.device)
    data, test, prompts = load_splits(cfg)
    cfg = build_tokenizer(cfg, data.shape)

    def body(run: RunDir, text: str) -> dict:
        objective = build_objective(cfg, data, test, prompts)
        step_flops = mean_step_flops(objective, first_batch(data, cfg.train.batch_size),
                                     cfg.train.steps)
        result = train(objective, data, cfg.train, run, text, eval_data=test,
                       num_workers=cfg.data.num_workers)

        tokenizer = result.eval_model  # the EMA weights
        device = tokenizer.latent_shift.device
        stats = tokenizer.fit_statistics(b.x for b in eval_batches(data, device))
        metrics = {"test": evaluate_tokenizer(tokenizer, test),
                   "mean_image_mse": mean_image_mse(data, test),
                   "latent_shape": list(tokenizer.latent_shape(data.shape)),
                   "latent_statistics": stats,
                   "parameters": num_parameters(tokenizer),
                   "steps": result.step, "replicas_identical": result.replicas_identical,
                   "step_flops": step_flops, "train_flops": step_flops * cfg.train.steps}
        metrics |= recipe_record(cfg, objective)
        if world.is_main:
            tokenizer.save(run.path / "tokenizer", meta={"data": data.name,
                                                         "data_fingerprint": data.fingerprint()})
            if data.is_image:
                save_reconstructions(tokenizer, test, run.samples / "reconstructions.png")
        return metrics

    # the same seed on every rank: the same initial weights
    return run_skeleton(cfg, out, mode, body, seed=cfg.train.seed, writer=world.is_main)
