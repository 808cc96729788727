"""Configuration of a generator run: which family, which network, which process settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from latentlab.config import switched
from latentlab.data.config import DataConfig
from latentlab.generators.autoregressive import ARConfig
from latentlab.generators.denoisers.dit import DiTConfig
from latentlab.generators.denoisers.mlp import MLPDenoiserConfig
from latentlab.generators.gan import GANConfig
from latentlab.generators.maskgit import MaskGITConfig
from latentlab.generators.pixelcnn import PixelCNNConfig
from latentlab.training.config import TrainConfig

FAMILIES = ("flow", "ddpm", "vpsde", "ar", "gan", "maskgit", "pixelcnn")


@dataclass
class FlowSettings:
    kind: Literal["flow"] = "flow"
    """Flow matching (rectified flow)."""
    time_sampling: Literal["uniform", "logit_normal"] = "uniform"
    """Distribution of training times."""


@dataclass
class DDPMSettings:
    kind: Literal["ddpm"] = "ddpm"
    """Discrete-time DDPM."""
    schedule: Literal["linear", "cosine"] = "linear"
    """Noise schedule."""
    timesteps: int = 1000
    """Number of diffusion steps T."""

    def __post_init__(self):
        if self.timesteps < 1:
            raise ValueError(f"timesteps: must be >= 1, got {self.timesteps}")


@dataclass
class VPSDESettings:
    kind: Literal["vpsde"] = "vpsde"
    """The variance-preserving SDE."""
    beta_min: float = 0.1
    """beta(t) at t = 0."""
    beta_max: float = 20.0
    """beta(t) at t = 1."""

    def __post_init__(self):
        if not 0 < self.beta_min < self.beta_max:
            raise ValueError("beta_min, beta_max: need 0 < beta_min < beta_max")


ProcessConfig = FlowSettings | DDPMSettings | VPSDESettings
"""The settings of a continuous process, a tagged union whose kind is the family."""

NetworkConfig = (DiTConfig | MLPDenoiserConfig | ARConfig | GANConfig | MaskGITConfig
                 | PixelCNNConfig)
"""A generator's network, a tagged union: dit or mlp (flow, ddpm, vpsde), ar, gan, maskgit,
pixelcnn."""

@dataclass
class TextConfig:
    """The text side of a text-conditioned generator: a tokenizer trained on the training
    captions and a small text transformer trained with the generator, or a frozen pretrained
    text model."""

    vocab_size: int = 512
    """Largest vocabulary of the caption tokenizer (byte-pair encoding, trained on the training
    captions; smaller when the captions have fewer distinct pieces)."""
    max_len: int = 32
    """Longest prompt in tokens, the begin token included."""
    width: int = 128
    """Width of the text transformer."""
    depth: int = 2
    """Blocks of the text transformer."""
    heads: int = 4
    """Attention heads of the text transformer; must divide width."""
    pretrained: str = ""
    """A local Hugging Face folder of a CLIP or T5 text model (saved with save_pretrained;
    nothing downloads), used frozen with its own tokenizer instead of the two above."""

    def __post_init__(self):
        for name in ("vocab_size", "max_len", "width", "depth", "heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.max_len < 2:
            raise ValueError(f"max_len: must be >= 2 (the begin token and a word), got "
                             f"{self.max_len}")
        if self.width % self.heads:
            raise ValueError(f"heads: must divide width {self.width}, got {self.heads}")


CONDITIONS = ("auto", "text", "class", "none")

NETWORKS = {"flow": ("dit", "mlp"), "ddpm": ("dit", "mlp"), "vpsde": ("dit", "mlp"),
            "ar": ("ar",), "gan": ("gan",), "maskgit": ("maskgit",), "pixelcnn": ("pixelcnn",)}
"""family -> the network kinds that can serve it."""


@dataclass
class GeneratorConfig:
    family: Literal["flow", "ddpm", "vpsde", "ar", "gan", "maskgit", "pixelcnn"] = "flow"
    """flow matching, DDPM, VP-SDE (continuous data), ar or maskgit (token indices), gan, or
    pixelcnn (token indices, or pixels quantised to network.levels when there is no
    tokenizer)."""
    network: NetworkConfig | None = None
    """The network: dit ((C, h, w) latents) or mlp (vectors) for flow, ddpm and vpsde; ar; gan;
    maskgit; pixelcnn. Not given: the family's, with its defaults (continuous families: mlp for
    vectors, dit for images, picked from the data)."""
    process: ProcessConfig | None = None
    """Settings of the continuous process (kind = family; its defaults when not given; left
    out for ar, gan and pixelcnn)."""
    condition: Literal["auto", "text", "class", "none"] = "auto"
    """What samples are drawn for: text (prompts; the data's captions in training), class (its
    labels) or none; auto: text when the data has captions, else class when it has labels, else
    none (a run records what it chose)."""
    text: TextConfig | None = None
    """The text side (only when conditioned on text)."""
    label_dropout: float = 0.1
    """Probability of replacing a label or prompt by the null one in training
    (classifier-free guidance)."""
    sampler: str = ""
    """Default sampler ('' = the process's own default, e.g. euler for flow)."""
    steps: int = 50
    """Default number of sampling steps (maskgit: decoding steps, at most one per token)."""

    def __post_init__(self):
        if not 0 <= self.label_dropout < 1:
            raise ValueError(f"label_dropout: must be in [0, 1), got {self.label_dropout}")
        if self.steps < 1:
            raise ValueError(f"steps: must be >= 1, got {self.steps}")
        self.text = switched(self.text, self.condition in ("auto", "text"), TextConfig)
        kinds = NETWORKS[self.family]
        if self.network is None and len(kinds) == 1:
            self.network = {"ar": ARConfig, "gan": GANConfig, "maskgit": MaskGITConfig,
                            "pixelcnn": PixelCNNConfig}[self.family]()
        if self.network is not None and self.network.kind not in kinds:
            raise ValueError(f"network.kind: '{self.network.kind}' cannot serve family "
                             f"'{self.family}' (it takes {' or '.join(kinds)})")
        continuous = self.family in ("flow", "ddpm", "vpsde")
        settings = {"flow": FlowSettings, "ddpm": DDPMSettings, "vpsde": VPSDESettings}
        self.process = switched(self.process, continuous, settings.get(self.family))
        if self.process is not None and self.process.kind != self.family:
            raise ValueError(f"process.kind: '{self.process.kind}' settings for family "
                             f"'{self.family}'; set process.kind to {self.family} too")

    @staticmethod
    def upgrade(data: dict) -> dict:
        """The layout before tagged unions (to 2026-12): `network: auto | mlp | dit` beside
        `mlp`, `transformer` and `gan` sections, and one `process` section for every family."""
        if not isinstance(data.get("network", {}), str):
            return data
        family, network = data.get("family", "flow"), data.pop("network")
        mlp, transformer, gan = (data.pop(k, {}) for k in ("mlp", "transformer", "gan"))
        mlp.pop("num_classes", None)
        if network == "auto":  # the data chose; settings left at their defaults did not matter
            network = ("dit" if DiTConfig(**transformer) != DiTConfig() else
                       "mlp" if MLPDenoiserConfig(**mlp) != MLPDenoiserConfig() else "auto")
        chosen = {"ar": ("ar", transformer), "gan": ("gan", gan), "mlp": ("mlp", mlp),
                  "dit": ("dit", transformer)}.get(family if family in ("ar", "gan")
                                                   else network)
        if chosen is not None:
            kind, settings = chosen
            if kind == "ar":
                settings = {k: v for k, v in settings.items() if k != "patch_size"}
            data["network"] = {"kind": kind, **settings}
        process = data.pop("process", {})
        keys = {"flow": ("time_sampling",), "ddpm": ("schedule", "timesteps"),
                "vpsde": ("beta_min", "beta_max")}.get(family, ())
        if keys:
            data["process"] = {"kind": family, **{k: process[k] for k in keys if k in process}}
        return data


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
