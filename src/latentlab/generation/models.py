"""Build the network of a generator run from its config and the shape of what it models."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from latentlab.data.text import TextTokenizer
from latentlab.errors import ConfigError
from latentlab.generation.config import GeneratorConfig, TextConfig
from latentlab.generators import PROCESSES, Process
from latentlab.generators.autoregressive import ARTransformer
from latentlab.generators.denoisers.dit import DiT, DiTConfig
from latentlab.generators.denoisers.mlp import MLPDenoiser, MLPDenoiserConfig
from latentlab.generators.gan import GANDiscriminator, GANGenerator
from latentlab.generators.hierarchical import HierarchicalPixelCNN
from latentlab.generators.maskgit import MaskGITTransformer
from latentlab.generators.pixelcnn import MAX_PIXEL_VOCAB, PixelCNN
from latentlab.nn.text import PretrainedTextEncoder, TextEncoder


@dataclass(frozen=True)
class Modelled:
    """What a generator models: the item shape, continuous latents or token indices, and what
    it is conditioned on.

    Attributes:
        shape: one item, (C, h, w) or (D,) for continuous data, (h, w) or () for indices.
        kind: "latents" (continuous), "indices" (discrete tokens) or "pixels" (images (C, H, W)
            a pixelcnn run quantises to one token per pixel).
        num_classes: classes of a class-conditional generator, else 0.
        vocab_size: codebook size for indices, levels ** C for pixels, else 0.
        condition: "text", "class" or "none" ("" reads as class or none by num_classes: runs
            from before text conditioning).
    """

    shape: tuple[int, ...]
    kind: str
    num_classes: int
    vocab_size: int = 0
    condition: str = ""

    def __post_init__(self):
        if not self.condition:
            object.__setattr__(self, "condition", "class" if self.num_classes else "none")

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


def null_condition(what: Modelled, prompts: TextTokenizer | None = None
                   ) -> int | torch.Tensor | None:
    """What "no condition" is fed as (classifier-free guidance, label dropout): the null class
    (index num_classes), the null prompt's (L,) token ids, or None for an unconditional
    generator."""
    if what.condition == "text":
        return prompts.null_ids
    return what.num_classes if what.condition == "class" else None


def text_encoder(cfg: TextConfig, prompts: TextTokenizer, pretrained: dict | None = None
                 ) -> nn.Module:
    """The text encoder of the prompts `prompts` encodes: a fresh text transformer, or the
    frozen pretrained model of `cfg.pretrained` (built from its saved configuration
    `pretrained` when given: a saved generator holds the weights itself)."""
    if not cfg.pretrained:
        return TextEncoder(prompts.vocab_size, prompts.max_len, prompts.null_ids,
                           prompts.pad_id, cfg.width, cfg.depth, cfg.heads)
    args = (prompts.max_len, prompts.null_ids, prompts.pad_id)
    try:
        if pretrained is not None:
            return PretrainedTextEncoder.from_config(pretrained, *args)
        return PretrainedTextEncoder.from_folder(cfg.pretrained, *args)
    except ValueError as e:
        raise ConfigError(f"generator.text.pretrained: {e}") from None


def build_models(cfg: GeneratorConfig, what: Modelled, prompts: TextTokenizer | None = None,
                 pretrained: dict | None = None) -> dict[str, nn.Module]:
    """{"model": network} (and "discriminator" for a GAN); raises ConfigError naming the field
    when the family cannot model this data. A text-conditioned generator (`what.condition`
    text) needs the tokenizer of its prompts; each network gets its own text encoder
    (`text_encoder`; `pretrained`: the saved configuration of a pretrained one)."""
    discrete = cfg.family in ("ar", "maskgit")
    if cfg.family != "pixelcnn" and discrete != (what.kind == "indices"):
        need = "token indices (a discrete tokenizer: vq, lfq, fsq, gumbel, hvq)" if discrete \
            else "continuous data (use generator.family ar, maskgit or pixelcnn for token indices)"
        raise ConfigError(f"generator.family: '{cfg.family}' models {need}; this data is "
                          f"{what.kind}")
    net, classes = resolve_network(cfg, what).network, what.num_classes
    if what.condition == "text" and prompts is None:
        raise ValueError("a text-conditioned generator needs the tokenizer of its prompts")

    def text() -> dict:
        if what.condition != "text":
            return {}
        return {"text": text_encoder(cfg.text, prompts, pretrained)}

    if net.kind == "pixelcnn":
        return {"model": pixelcnn(cfg, what, text())}
    if net.kind == "ar":
        return {"model": ARTransformer(net, what.vocab_size, max(1, math.prod(what.shape)),
                                       classes, **text())}
    if net.kind == "maskgit":
        return {"model": MaskGITTransformer(net, what.vocab_size, max(1, math.prod(what.shape)),
                                            classes, **text())}
    if net.kind == "gan":
        return {"model": GANGenerator(net, what.shape, classes, **text()),
                "discriminator": GANDiscriminator(net, what.shape, classes, **text())}
    if net.kind == "mlp":
        if len(what.shape) != 1:
            raise ConfigError(f"generator.network: mlp takes vectors, the data is {what.shape}")
        if what.condition == "text":
            raise ConfigError("generator.condition: text needs an image network (dit, ar, gan); "
                              "mlp models vectors")
        return {"model": MLPDenoiser(what.shape[0], net, classes)}
    if len(what.shape) != 3:
        raise ConfigError(f"generator.network: dit takes (C, h, w) data, got {what.shape}")
    c, h, _ = what.shape
    try:
        return {"model": DiT(net, c, h, classes, **text())}
    except ValueError as e:
        raise ConfigError(f"generator.network.{e}") from None


def pixelcnn(cfg: GeneratorConfig, what: Modelled, text: dict
             ) -> PixelCNN | HierarchicalPixelCNN:
    """The PixelCNN of a run over a token grid (h, w) (a vector tokenizer's one token: a 1x1
    grid), over pixels (C, H, W), one joint token per pixel, or VQ-VAE-2's pair of priors over
    an hvq tokenizer's two levels (T,); `text`: {"text": encoder} or {}."""
    if what.kind == "latents":
        raise ConfigError("generator.family: 'pixelcnn' models token indices (a discrete "
                          "tokenizer: vq, lfq, fsq, gumbel, hvq) or pixels (no tokenizer); "
                          "this data is continuous latents")
    if what.kind == "pixels" and len(what.shape) != 3:
        raise ConfigError(f"generator.family: 'pixelcnn' models pixels of images (C, H, W); "
                          f"this data is {what.shape}")
    if what.kind == "pixels" and what.vocab_size > MAX_PIXEL_VOCAB:
        raise ConfigError(f"generator.network.levels: {cfg.network.levels} levels for "
                          f"{what.shape[0]} channels make {what.vocab_size} tokens per pixel, "
                          f"more than {MAX_PIXEL_VOCAB}")
    if what.kind == "indices" and len(what.shape) == 1:  # hvq: the top grid, then the bottom
        try:
            return HierarchicalPixelCNN(cfg.network, what.vocab_size, what.shape[0],
                                        what.num_classes, **text)
        except ValueError as e:
            raise ConfigError(f"generator.family: 'pixelcnn' models 2-D token grids or hvq's "
                              f"two levels; {e}") from None
    if what.kind == "indices" and len(what.shape) not in (0, 2):
        raise ConfigError(f"generator.family: 'pixelcnn' models 2-D token grids; these tokens "
                          f"are {what.shape}")
    grid = what.shape[1:] if what.kind == "pixels" else tuple(what.shape) or (1, 1)
    return PixelCNN(cfg.network, what.vocab_size, grid, what.num_classes, **text)


def pixel_levels(cfg: GeneratorConfig, what: Modelled) -> int:
    """Levels per channel of a pixelcnn run over pixels (`what.kind` pixels), else 0."""
    return cfg.network.levels if what.kind == "pixels" else 0
