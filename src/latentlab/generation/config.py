"""Configuration of a generator run: which family, which network, which process settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from latentlab.data.config import DataConfig
from latentlab.generators.denoisers.mlp import MLPDenoiserConfig
from latentlab.training.config import TrainConfig

FAMILIES = ("flow", "ddpm", "vpsde", "ar", "gan")


@dataclass
class ProcessConfig:
    time_sampling: Literal["uniform", "logit_normal"] = "uniform"
    """flow: distribution of training times."""
    schedule: Literal["linear", "cosine"] = "linear"
    """ddpm: noise schedule."""
    timesteps: int = 1000
    """ddpm: number of diffusion steps T."""
    beta_min: float = 0.1
    """vpsde: beta(t) at t = 0."""
    beta_max: float = 20.0
    """vpsde: beta(t) at t = 1."""

    def __post_init__(self):
        if self.timesteps < 1:
            raise ValueError(f"timesteps: must be >= 1, got {self.timesteps}")
        if not 0 < self.beta_min < self.beta_max:
            raise ValueError("beta_min, beta_max: need 0 < beta_min < beta_max")


@dataclass
class TransformerConfig:
    width: int = 128
    """Model width (DiT and autoregressive transformer)."""
    depth: int = 4
    """Number of blocks."""
    heads: int = 4
    """Attention heads."""
    patch_size: int = 2
    """DiT: patch size p over the (h, w) latent."""
    mlp_ratio: float = 4.0
    """Hidden width of each block's MLP, as a multiple of width."""

    def __post_init__(self):
        for name in ("width", "depth", "heads", "patch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.width % self.heads:
            raise ValueError(f"heads: {self.heads} does not divide width {self.width}")


@dataclass
class GANSettings:
    noise_dim: int = 64
    """Dimension of the generator's input noise."""
    width: int = 128
    """Base width of generator and discriminator."""
    loss: Literal["hinge", "non_saturating"] = "hinge"
    """Adversarial loss."""


@dataclass
class GeneratorConfig:
    family: Literal["flow", "ddpm", "vpsde", "ar", "gan"] = "flow"
    """flow matching, DDPM, VP-SDE (continuous data), ar (token indices), or gan."""
    network: Literal["auto", "mlp", "dit"] = "auto"
    """Denoiser of a continuous process: auto picks mlp for vectors and dit for images."""
    mlp: MLPDenoiserConfig = field(default_factory=MLPDenoiserConfig)
    """The MLP denoiser (vectors); num_classes is set from the data."""
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    """The DiT denoiser or the autoregressive transformer."""
    process: ProcessConfig = field(default_factory=ProcessConfig)
    """Settings of the continuous processes."""
    gan: GANSettings = field(default_factory=GANSettings)
    """Settings of the GAN family."""
    label_dropout: float = 0.1
    """Probability of replacing a label by the null class in training (classifier-free
    guidance); 0 for unconditional data."""
    sampler: str = ""
    """Default sampler ('' = the process's own default, e.g. euler for flow)."""
    steps: int = 50
    """Default number of sampling steps."""

    def __post_init__(self):
        if not 0 <= self.label_dropout < 1:
            raise ValueError(f"label_dropout: must be in [0, 1), got {self.label_dropout}")
        if self.steps < 1:
            raise ValueError(f"steps: must be >= 1, got {self.steps}")


@dataclass
class GeneratorRunConfig:
    """Everything `train-generator` needs."""

    tokenizer: str = ""
    """Run directory of a trained tokenizer: the generator models its latent (the training set
    is encoded once into a cache beside the tokenizer). Empty: model the data directly."""
    data: DataConfig = field(default_factory=DataConfig)
    """The dataset (encoded through the tokenizer when one is given)."""
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    """The generator."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """The training loop."""
