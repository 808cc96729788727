"""diffusers autoencoders (`AutoencoderKL`, `VQModel`) as latentlab encoders and decoders.

The encoder and decoder are diffusers' own `Encoder` / `Decoder` modules (with the 1x1
`quant_conv` / `post_quant_conv` beside them); the bottleneck between them is latentlab's: the
`kl` bottleneck reads AutoencoderKL's moments (mean and log-variance, chunked on the channels
and clamped to [-30, 20] as diffusers does), the `vq` bottleneck holds VQModel's codebook
(`quantize.embedding.weight`). So a diffusers folder loads into a `Tokenizer` without losing a
weight, trains with every latentlab recipe, and is written back as a folder that
`AutoencoderKL.from_pretrained` reads (`to_diffusers`).

What is not carried over: the folder's `scaling_factor` (and `shift_factor`); latentlab fits
per-channel latent statistics on the data instead (`Tokenizer.fit_statistics`), and writes them
back as `latents_mean` / `latents_std` with `scaling_factor: 1`. VQModel's `norm_type:
spatial` decoders and a `vq_embed_dim` other than `latent_channels` are refused.

diffusers is imported when a model is built (it takes a second or two to import).

Legend: B batch, C image channels, L latent channels, f = 2 ** (levels - 1) the downsampling.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from latentlab.errors import CheckpointError
from latentlab.tokenizers.bottlenecks import BottleneckConfig, KLConfig, VQConfig

CLASSES = ("AutoencoderKL", "VQModel")
"""The diffusers autoencoders latentlab reads and writes."""
FOLDER_CONFIG = "config.json"


@dataclass
class DiffusersConfig:
    kind: Literal["diffusers"] = "diffusers"
    """diffusers' autoencoder Encoder/Decoder (AutoencoderKL with a kl bottleneck, VQModel with
    vq; the other bottlenecks train too but have no diffusers folder)."""
    block_out_channels: tuple[int, ...] = (32, 64)
    """Channels per level; each level after the first halves the resolution."""
    layers_per_block: int = 1
    """ResNet blocks per level (the decoder has one more, as in diffusers)."""
    norm_num_groups: int = 8
    """GroupNorm groups; must divide every level's channels."""
    attention: bool = True
    """Self-attention in the mid block (diffusers' `mid_block_add_attention`)."""
    act_fn: str = "silu"
    """Activation (a diffusers activation name)."""
    quant_conv: bool = True
    """The 1x1 convolutions before the bottleneck and after it (`use_quant_conv`,
    `use_post_quant_conv`)."""
    width: float = 1.0
    """Multiplier of the decoder's channels (rounded to a multiple of norm_num_groups); below 1
    gives the DAE recipe's weak decoder."""

    def __post_init__(self):
        if not self.block_out_channels or min(self.block_out_channels) < 1:
            raise ValueError("block_out_channels: needs at least one level, each >= 1, got "
                             f"{self.block_out_channels}")
        for name in ("layers_per_block", "norm_num_groups"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(f"norm_num_groups: {self.norm_num_groups} does not divide "
                             f"block_out_channels {self.block_out_channels}")

    @property
    def factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    def module_args(self, width: float = 1.0) -> dict:
        """The arguments diffusers' Encoder/Decoder share, channels scaled by `width`."""
        g = self.norm_num_groups
        channels = tuple(max(g, round(c * width / g) * g) for c in self.block_out_channels)
        return dict(block_out_channels=channels, layers_per_block=self.layers_per_block,
                    norm_num_groups=g, act_fn=self.act_fn, mid_block_add_attention=self.attention)


class DiffusersEncoder(nn.Module):
    """(B, C, H, W) -> (B, out_channels, H/f, W/f): diffusers' Encoder, then `quant_conv`."""

    def __init__(self, cfg: DiffusersConfig, in_channels: int, out_channels: int):
        super().__init__()
        from diffusers.models.autoencoders.vae import Encoder

        levels = len(cfg.block_out_channels)
        self.net = Encoder(in_channels, out_channels, ("DownEncoderBlock2D",) * levels,
                           double_z=False, **cfg.module_args())
        self.quant_conv = nn.Conv2d(out_channels, out_channels, 1) if cfg.quant_conv \
            else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.net(x))


class DiffusersDecoder(nn.Module):
    """(B, L, h, w) -> (B, C, h*f, w*f): `post_quant_conv`, then diffusers' Decoder."""

    def __init__(self, cfg: DiffusersConfig, latent_channels: int, out_channels: int,
                 width: float | None = None):
        super().__init__()
        from diffusers.models.autoencoders.vae import Decoder

        levels = len(cfg.block_out_channels)
        self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1) if cfg.quant_conv \
            else nn.Identity()
        self.net = Decoder(latent_channels, out_channels, ("UpDecoderBlock2D",) * levels,
                           **cfg.module_args(cfg.width if width is None else width))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.post_quant_conv(z))


# -------------------------------------------------------------- diffusers folders <-> latentlab

RENAMES = (("encoder.net.", "encoder."), ("encoder.quant_conv.", "quant_conv."),
           ("decoder.post_quant_conv.", "post_quant_conv."), ("decoder.net.", "decoder."),
           ("bottleneck.codebook", "quantize.embedding.weight"))
"""latentlab state-dict prefix -> diffusers prefix."""


def _rename(key: str, pairs) -> str | None:
    for ours, theirs in pairs:
        if key.startswith(ours):
            return theirs + key[len(ours):]
    return None


def is_diffusers_folder(path: str | Path) -> bool:
    """Whether `path` is a folder with a diffusers `config.json` (of any class)."""
    path = Path(path)
    if not (path / FOLDER_CONFIG).is_file():
        return False
    try:
        return "_class_name" in json.loads((path / FOLDER_CONFIG).read_text())
    except (OSError, ValueError):
        return False


def read_config(path: Path) -> dict:
    """The folder's config.json; CheckpointError unless it describes an AutoencoderKL or a
    VQModel latentlab can take."""
    try:
        config = json.loads((path / FOLDER_CONFIG).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path / FOLDER_CONFIG}: cannot be read ({e})") from None
    name = config.get("_class_name") if isinstance(config, dict) else None
    if name not in CLASSES:
        raise CheckpointError(f"{path}: a diffusers {name or 'folder without _class_name'}, "
                              f"not an autoencoder ({' or '.join(CLASSES)})")
    for key, want in (("norm_type", "group"), ("vq_embed_dim", None)):
        if config.get(key, want) not in (want, config.get("latent_channels")):
            raise CheckpointError(f"{path / FOLDER_CONFIG}: {key} {config[key]!r} is not "
                                  "supported (latentlab reads group-norm decoders whose codes "
                                  "have latent_channels channels)")
    for key, block in (("down_block_types", "DownEncoderBlock2D"),
                       ("up_block_types", "UpDecoderBlock2D")):
        if any(b != block for b in config.get(key, [block])):
            raise CheckpointError(f"{path / FOLDER_CONFIG}: {key} other than {block} are not "
                                  "supported")
    return config


def architecture(config: dict) -> tuple[DiffusersConfig, int, BottleneckConfig, int]:
    """(arch, latent channels, bottleneck, image channels) of a diffusers autoencoder config."""
    arch = DiffusersConfig(
        block_out_channels=tuple(config.get("block_out_channels", (64,))),
        layers_per_block=config.get("layers_per_block", 1),
        norm_num_groups=config.get("norm_num_groups", 32),
        attention=config.get("mid_block_add_attention", True),
        act_fn=config.get("act_fn", "silu"),
        quant_conv=config.get("use_quant_conv", True))
    if config["_class_name"] == "VQModel":
        bottleneck = VQConfig(codebook_size=config.get("num_vq_embeddings", 256), update="loss",
                              kmeans_init=False)
    else:
        bottleneck = KLConfig()
    latent = config.get("latent_channels", 3 if config["_class_name"] == "VQModel" else 4)
    if config.get("in_channels", 3) != config.get("out_channels", 3):
        raise CheckpointError(f"in_channels {config.get('in_channels')} and out_channels "
                              f"{config.get('out_channels')} differ: not an autoencoder")
    return arch, latent, bottleneck, config.get("in_channels", 3)


def from_diffusers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers autoencoder's state dict under latentlab's names."""
    back = tuple((theirs, ours) for ours, theirs in RENAMES)
    return {_rename(k, back) or k: v for k, v in state.items()}


def to_diffusers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """latentlab's encoder/decoder/codebook weights under diffusers' names (statistics and the
    bottleneck's training buffers are left out)."""
    out = {}
    for k, v in state.items():
        name = _rename(k, RENAMES)
        if name is not None:
            out[name] = v
    return out


def folder_config(class_name: str, arch: DiffusersConfig, latent: int, in_channels: int,
                  codebook_size: int, shift: list[float], scale: list[float]) -> dict:
    """The config of the diffusers model that holds these weights."""
    levels = len(arch.block_out_channels)
    config = dict(in_channels=in_channels, out_channels=in_channels,
                  down_block_types=("DownEncoderBlock2D",) * levels,
                  up_block_types=("UpDecoderBlock2D",) * levels,
                  latent_channels=latent, scaling_factor=1.0, **arch.module_args())
    if class_name == "VQModel":
        return config | dict(num_vq_embeddings=codebook_size)
    return config | dict(use_quant_conv=arch.quant_conv, use_post_quant_conv=arch.quant_conv,
                         latents_mean=tuple(shift), latents_std=tuple(scale))


def model_class(class_name: str):
    import diffusers

    return getattr(diffusers, class_name)


def describe(cfg) -> str:
    """A TokenizerConfig's architecture in words, for errors."""
    arch = cfg.arch
    if arch.kind != "diffusers":
        return f"a {arch.kind} arch"
    return (f"block_out_channels {list(arch.block_out_channels)}, layers_per_block "
            f"{arch.layers_per_block}, norm_num_groups {arch.norm_num_groups}, "
            f"{cfg.latent_channels} latent channels, a {cfg.bottleneck.kind} bottleneck")


def weight_files(path: Path) -> list[Path]:
    """The folder's config and weight files, in a fixed order (what a fingerprint hashes)."""
    weights = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin"))
    return [path / FOLDER_CONFIG, *weights]
