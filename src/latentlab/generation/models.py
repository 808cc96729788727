"""Build the network of a generator run from its config and the shape of what it models."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from torch import nn

from latentlab.errors import ConfigError
from latentlab.generation.config import GeneratorConfig
from latentlab.generators import PROCESSES, Process
from latentlab.generators.autoregressive import ARTransformer
from latentlab.generators.denoisers.dit import DiT, DiTConfig
from latentlab.generators.denoisers.mlp import MLPDenoiser, MLPDenoiserConfig
from latentlab.generators.gan import GANDiscriminator, GANGenerator


@dataclass(frozen=True)
class Modelled:
    """What a generator models: the item shape, continuous latents or token indices, classes.

    Attributes:
        shape: one item, (C, h, w) or (D,) for continuous data, (h, w) or () for indices.
        kind: "latents" (continuous) or "indices" (discrete tokens).
        num_classes: 0 when unlabelled.
        vocab_size: codebook size for indices, else 0.
    """

    shape: tuple[int, ...]
    kind: str
    num_classes: int
    vocab_size: int = 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self) | {"shape": list(self.shape)}


def build_process(cfg: GeneratorConfig) -> Process | None:
    """The continuous process of a flow / ddpm / vpsde run (None for ar and gan)."""
    if cfg.process is None:
        return None
    settings = {k: v for k, v in dataclasses.asdict(cfg.process).items() if k != "kind"}
    return PROCESSES[cfg.family](**settings)


def resolve_network(cfg: GeneratorConfig, what: Modelled) -> GeneratorConfig:
    """`cfg` with its network chosen when it was left to the data: mlp for vectors, dit for
    (C, h, w) latents (ar and gan have one network each)."""
    if cfg.network is not None:
        return cfg
    network = MLPDenoiserConfig() if len(what.shape) == 1 else DiTConfig()
    return dataclasses.replace(cfg, network=network)


def build_models(cfg: GeneratorConfig, what: Modelled) -> dict[str, nn.Module]:
    """{"model": network} (and "discriminator" for a GAN); raises ConfigError naming the field
    when the family cannot model this data."""
    if (cfg.family == "ar") != (what.kind == "indices"):
        need = "token indices (a discrete tokenizer: vq, lfq, fsq)" if cfg.family == "ar" \
            else "continuous data (use generator.family ar for token indices)"
        raise ConfigError(f"generator.family: '{cfg.family}' models {need}; this data is "
                          f"{what.kind}")
    net, classes = resolve_network(cfg, what).network, what.num_classes
    if net.kind == "ar":
        return {"model": ARTransformer(net, what.vocab_size, max(1, math.prod(what.shape)),
                                       classes)}
    if net.kind == "gan":
        return {"model": GANGenerator(net, what.shape, classes),
                "discriminator": GANDiscriminator(net, what.shape, classes)}
    if net.kind == "mlp":
        if len(what.shape) != 1:
            raise ConfigError(f"generator.network: mlp takes vectors, the data is {what.shape}")
        return {"model": MLPDenoiser(what.shape[0], net, classes)}
    if len(what.shape) != 3:
        raise ConfigError(f"generator.network: dit takes (C, h, w) data, got {what.shape}")
    c, h, _ = what.shape
    try:
        return {"model": DiT(net, c, h, classes)}
    except ValueError as e:
        raise ConfigError(f"generator.network.{e}") from None
