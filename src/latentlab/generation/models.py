"""Build the network of a generator run from its config and the shape of what it models."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from torch import nn

from latentlab.errors import ConfigError
from latentlab.generation.config import GeneratorConfig
from latentlab.generators import PROCESSES, Process
from latentlab.generators.autoregressive import ARConfig, ARTransformer
from latentlab.generators.denoisers.dit import DiT, DiTConfig
from latentlab.generators.denoisers.mlp import MLPDenoiser
from latentlab.generators.gan import GANConfig, GANDiscriminator, GANGenerator


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
    p = cfg.process
    if cfg.family == "flow":
        return PROCESSES["flow"](time_sampling=p.time_sampling)
    if cfg.family == "ddpm":
        return PROCESSES["ddpm"](schedule=p.schedule, timesteps=p.timesteps)
    if cfg.family == "vpsde":
        return PROCESSES["vpsde"](beta_min=p.beta_min, beta_max=p.beta_max)
    return None


def build_models(cfg: GeneratorConfig, what: Modelled) -> dict[str, nn.Module]:
    """{"model": network} (and "discriminator" for a GAN); raises ConfigError naming the field
    when the family cannot model this data."""
    if (cfg.family == "ar") != (what.kind == "indices"):
        need = "token indices (a discrete tokenizer: vq, lfq, fsq)" if cfg.family == "ar" \
            else "continuous data (use generator.family ar for token indices)"
        raise ConfigError(f"generator.family: '{cfg.family}' models {need}; this data is "
                          f"{what.kind}")
    t = cfg.transformer
    if cfg.family == "ar":
        ar = ARConfig(vocab_size=what.vocab_size, seq_len=max(1, math.prod(what.shape)),
                      width=t.width, depth=t.depth, heads=t.heads, mlp_ratio=t.mlp_ratio,
                      num_classes=what.num_classes)
        return {"model": ARTransformer(ar)}
    if cfg.family == "gan":
        gan = GANConfig(noise_dim=cfg.gan.noise_dim, width=cfg.gan.width,
                        num_classes=what.num_classes, loss=cfg.gan.loss)
        return {"model": GANGenerator(gan, what.shape),
                "discriminator": GANDiscriminator(gan, what.shape)}
    network = cfg.network if cfg.network != "auto" else (
        "mlp" if len(what.shape) == 1 else "dit")
    if network == "mlp":
        if len(what.shape) != 1:
            raise ConfigError(f"generator.network: mlp takes vectors, the data is {what.shape}")
        mlp = dataclasses.replace(cfg.mlp, num_classes=what.num_classes)
        return {"model": MLPDenoiser(what.shape[0], mlp)}
    if len(what.shape) != 3:
        raise ConfigError(f"generator.network: dit takes (C, h, w) data, got {what.shape}")
    c, h, _ = what.shape
    try:
        dit = DiTConfig(input_size=h, in_channels=c, patch_size=t.patch_size, width=t.width,
                        depth=t.depth, heads=t.heads, mlp_ratio=t.mlp_ratio,
                        num_classes=what.num_classes)
    except ValueError as e:
        raise ConfigError(f"generator.transformer.{e}") from None
    return {"model": DiT(dit)}
