"""The Tokenizer: encoder -> bottleneck -> decoder, with the latent statistics generators need.

`encode(x)` gives a typed `BottleneckOutput`; `decode` takes a latent (B, L, *S) or, for
discrete bottlenecks, indices (B, *S). After training, per-channel statistics of the latent over
the training data are stored as buffers, so `normalize` maps latents to roughly zero mean and
unit variance for a generator: the scale is a property of this model, kept in its weights file,
never a magic number in a script. `Tokenizer.save(dir)` / `Tokenizer.load(path)` need nothing
else.

Legend: B batch, C image channels (or vector features), H height, W width, L latent channels,
S latent spatial dims ((h, w) for images, () for vectors).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from latentlab import __version__
from latentlab import config as C
from latentlab.errors import CheckpointError, ConfigError
from latentlab.io import atomic_dir, atomic_path
from latentlab.tokenizers import diffusers_ae as hf
from latentlab.tokenizers.bottlenecks import (
    BOTTLENECKS,
    BottleneckConfig,
    IdentityConfig,
    build_bottleneck,
)
from latentlab.tokenizers.bottlenecks.base import BottleneckOutput
from latentlab.tokenizers.conv import ConvConfig, ConvDecoder, ConvEncoder, check_image_size
from latentlab.tokenizers.diffusers_ae import DiffusersConfig, DiffusersDecoder, DiffusersEncoder
from latentlab.tokenizers.mlp import MLPConfig, MLPDecoder, MLPEncoder

WEIGHTS, CONFIG = "tokenizer.safetensors", "tokenizer.yaml"
DIFFUSERS = "diffusers"
"""The folder beside them holding a diffusers model's copy (`save_diffusers`)."""
IN_CHANNELS = "in_channels"
"""The key in CONFIG of the image channels (vector features) the tokenizer was built for."""


@dataclass
class TokenizerConfig:
    arch: ConvConfig | MLPConfig | DiffusersConfig = field(default_factory=ConvConfig)
    """The encoder/decoder: conv (images), mlp (vectors, e.g. the mixture toy) or diffusers
    (diffusers' autoencoder Encoder/Decoder, images)."""
    latent_channels: int = 4
    """Channels of the latent the decoder receives (FSQ: one per level)."""
    bottleneck: BottleneckConfig = field(default_factory=IdentityConfig)
    """What sits between encoder and decoder: identity (plain AE), kl (VAE), vq, lfq, fsq or
    gumbel (DALL-E's dVAE), or hvq (VQ-VAE-2's two levels)."""

    def __post_init__(self):
        if self.latent_channels < 1:
            raise ValueError(f"latent_channels: must be >= 1, got {self.latent_channels}")
        if self.bottleneck.kind == "fsq" and len(self.bottleneck.levels) != self.latent_channels:
            raise ValueError(f"bottleneck.levels: {len(self.bottleneck.levels)} levels but "
                             f"latent_channels is {self.latent_channels} (one level per "
                             "channel)")

    @staticmethod
    def upgrade(data: dict) -> dict:
        """The layout before tagged unions (to 2026-12): `arch: conv` beside `conv:` and `mlp:`
        sections, `bottleneck.kind` beside a section per kind, and `in_channels`, which now
        comes from the data."""
        data.pop("in_channels", None)
        arch = data.get("arch")
        if isinstance(arch, str) or "conv" in data or "mlp" in data:
            kind = arch if isinstance(arch, str) else (arch or {}).get("kind", "conv")
            sections = {k: data.pop(k, {}) for k in ("conv", "mlp")}
            data["arch"] = {**(arch if isinstance(arch, dict) else {}), "kind": kind,
                            **sections[kind]}
        bottleneck = data.get("bottleneck")
        if isinstance(bottleneck, dict) and any(isinstance(bottleneck.get(k), dict)
                                                for k in BOTTLENECKS):
            kind = bottleneck.get("kind", "identity")
            data["bottleneck"] = {"kind": kind, **bottleneck.get(kind, {})}
        return data


@dataclass(frozen=True)
class Reconstruction:
    """`Tokenizer.forward`'s result: the reconstruction and what the bottleneck made."""

    x_hat: torch.Tensor
    bottleneck: BottleneckOutput


class Tokenizer(nn.Module):
    """Encoder, bottleneck and decoder (see the module docstring).

    Args:
        cfg: the architecture.
        in_channels: image channels, or vector features for the mlp arch (from the data).
        decoder_width: overrides the decoder's width multiplier (a weak DAE decoder).
    """

    def __init__(self, cfg: TokenizerConfig, in_channels: int,
                 decoder_width: float | None = None):
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels: must be >= 1, got {in_channels}")
        self.cfg, self.in_channels = cfg, in_channels
        self.bottleneck = build_bottleneck(cfg.bottleneck, cfg.latent_channels)
        c, lat, enc_out = in_channels, cfg.latent_channels, self.bottleneck.in_channels
        if cfg.arch.kind == "conv":
            self.encoder = ConvEncoder(cfg.arch, c, enc_out)
            self.decoder = ConvDecoder(cfg.arch, lat, c, width=decoder_width)
        elif cfg.arch.kind == "diffusers":
            self.encoder = DiffusersEncoder(cfg.arch, c, enc_out)
            self.decoder = DiffusersDecoder(cfg.arch, lat, c, width=decoder_width)
        else:
            self.encoder = MLPEncoder(cfg.arch, c, enc_out)
            self.decoder = MLPDecoder(cfg.arch, lat, c, width=decoder_width)
        # per-channel latent statistics, fitted after training (identity until then)
        self.register_buffer("latent_shift", torch.zeros(lat))
        self.register_buffer("latent_scale", torch.ones(lat))
        self.fitted = True
        """False for a diffusers folder read as it is: its statistics are not fitted yet."""

    @property
    def discrete(self) -> bool:
        return self.bottleneck.discrete

    @property
    def factor(self) -> int:
        return 1 if self.cfg.arch.kind == "mlp" else self.cfg.arch.factor

    def check_input(self, shape: tuple[int, ...]) -> None:
        """Raise ValueError naming the field when items of `shape` do not fit this model."""
        want = 1 if self.cfg.arch.kind == "mlp" else 3
        if len(shape) != want:
            kind = "images (C, H, W)" if want == 3 else "vectors (D,)"
            raise ValueError(f"arch: '{self.cfg.arch.kind}' takes {kind}, the data has items "
                             f"of shape {tuple(shape)}")
        if shape[0] != self.in_channels:
            raise ValueError(f"in_channels: the model takes {self.in_channels}, the data "
                             f"has {shape[0]}")
        if want == 3:
            try:
                check_image_size(self.cfg.arch, shape)
            except ValueError as e:
                name = "block_out_channels" if self.cfg.arch.kind == "diffusers" else "ch_mult"
                raise ValueError(f"arch.{name}{str(e).removeprefix('ch_mult')}") from None
            self.bottleneck.check_grid(tuple(s // self.factor for s in shape[1:]))

    def latent_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """(C, H, W) -> (L, H/f, W/f); (D,) -> (L,)."""
        self.check_input(shape)
        return (self.cfg.latent_channels, *(s // self.factor for s in shape[1:]))

    def index_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The token indices of one item of `shape`, for a discrete bottleneck: (h, w) or (),
        or hvq's one sequence of both levels (T,)."""
        return self.bottleneck.index_shape(self.latent_shape(shape)[1:])

    def encode(self, x: torch.Tensor) -> BottleneckOutput:
        """(B, C, H, W) or (B, D) -> the bottleneck's output (latent (B, L, *S))."""
        return self.bottleneck(self.encoder(x))

    def decode(self, latent: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """(B, L, *S) latent, or (B, *S) int64 indices of a discrete bottleneck -> (B, C, ...).

        With `batch_size`, decodes in tiles of that many items (same result, less memory).
        """
        if batch_size is not None and len(latent) > batch_size:
            return torch.cat([self.decode(t) for t in latent.split(batch_size)])
        if not latent.is_floating_point():
            latent = self.bottleneck.indices_to_codes(latent)
        return self.decoder(latent)

    def forward(self, x: torch.Tensor) -> Reconstruction:
        out = self.encode(x)
        return Reconstruction(self.decoder(out.latent), out)

    def _stat_shape(self, latent: torch.Tensor) -> tuple[int, ...]:
        return (1, -1) + (1,) * (latent.ndim - 2)

    def normalize(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent -> per channel (latent - shift) / scale, about zero mean and unit variance."""
        shape = self._stat_shape(latent)
        return (latent - self.latent_shift.view(shape)) / self.latent_scale.view(shape)

    def denormalize(self, latent: torch.Tensor) -> torch.Tensor:
        """The inverse of `normalize`."""
        shape = self._stat_shape(latent)
        return latent * self.latent_scale.view(shape) + self.latent_shift.view(shape)

    @torch.no_grad()
    def fit_statistics(self, batches) -> dict[str, list[float]]:
        """Set shift/scale to the per-channel mean/std of eval-mode latents over `batches`.

        Sums are in float64 so that large datasets do not lose precision.
        """
        was_training = self.training
        self.eval()
        total, sq, count = 0.0, 0.0, 0
        for x in batches:
            z = self.encode(x).latent.double()
            z = z.movedim(1, -1).reshape(-1, z.shape[1])  # (tokens, L)
            total, sq, count = total + z.sum(0), sq + z.pow(2).sum(0), count + len(z)
        mean = total / count
        std = (sq / count - mean.pow(2)).clamp_min(1e-12).sqrt()
        self.latent_shift.copy_(mean.float())
        self.latent_scale.copy_(std.float().clamp_min(1e-6))  # a dead channel stays finite
        self.fitted = True
        self.train(was_training)
        return {"shift": self.latent_shift.tolist(), "scale": self.latent_scale.tolist()}

    # ---------------------------------------------------------------- save / load

    def save(self, directory: str | Path, meta: dict[str, str] | None = None) -> Path:
        """Write `tokenizer.safetensors` (weights, statistics, `meta` in its header) and
        `tokenizer.yaml` (the architecture), each atomically."""
        directory = Path(directory)
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in self.state_dict().items()}
        header = {"latentlab_version": __version__, **(meta or {})}
        with atomic_path(directory / WEIGHTS) as tmp:
            save_file(tensors, tmp, metadata={k: str(v) for k, v in header.items()})
        with atomic_path(directory / CONFIG) as tmp:
            tmp.write_text(f"{IN_CHANNELS}: {self.in_channels}\n" + C.dump_yaml(self.cfg))
        if self.diffusers_class is not None:
            self.save_diffusers(directory / DIFFUSERS)
        return directory

    @property
    def diffusers_class(self) -> str | None:
        """The diffusers class that holds this model (AutoencoderKL, VQModel), else None."""
        if self.cfg.arch.kind != "diffusers":
            return None
        kind = self.cfg.bottleneck.kind
        if kind == "kl":
            return "AutoencoderKL"
        vq = kind == "vq" and self.cfg.arch.quant_conv and not self.cfg.bottleneck.cosine
        return "VQModel" if vq else None

    def save_diffusers(self, directory: str | Path) -> Path:
        """Write this model as a diffusers folder (`save_pretrained`), which
        `<class>.from_pretrained` loads; the latent statistics become its `latents_mean` /
        `latents_std` (`scaling_factor` 1)."""
        name = self.diffusers_class
        if name is None:
            raise ValueError(f"a {self.cfg.arch.kind} tokenizer with a "
                             f"{self.cfg.bottleneck.kind} bottleneck has no diffusers class")
        size = self.bottleneck.codebook_size if self.discrete else 0
        config = hf.folder_config(name, self.cfg.arch, self.cfg.latent_channels,
                                  self.in_channels, size, self.latent_shift.tolist(),
                                  self.latent_scale.tolist())
        model = hf.model_class(name)(**config)
        model.load_state_dict(hf.to_diffusers(self.state_dict()))
        with atomic_dir(Path(directory)) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
        return Path(directory)

    @classmethod
    def load(cls, path: str | Path, expect: TokenizerConfig | None = None,
             map_location: str | torch.device = "cpu") -> Tokenizer:
        """A tokenizer from a run directory or the directory `save` wrote.

        Args:
            expect: if given, the architecture the caller requires; a stored config that
                differs raises CheckpointError naming the first differing field.
        """
        path = Path(path)
        if not (path / CONFIG).exists() and (path / "tokenizer" / CONFIG).exists():
            path = path / "tokenizer"
        if not (path / CONFIG).exists() and hf.is_diffusers_folder(path):
            return cls.from_diffusers(path, map_location)
        if not (path / CONFIG).exists():
            raise CheckpointError(f"{path}: no {CONFIG} (not a trained tokenizer, nor a "
                                  "diffusers autoencoder folder)")
        try:
            data = C.read_yaml(path / CONFIG)
            in_channels = data.pop(IN_CHANNELS, None)
            if not isinstance(in_channels, int):
                raise ConfigError(f"{IN_CHANNELS} must be an int, got {in_channels!r}")
            cfg = C.from_dict(TokenizerConfig, data)
        except ConfigError as e:
            raise CheckpointError(f"{path / CONFIG}: {e}") from None
        if expect is not None and cfg != expect:
            name, have, want = C.first_difference(cfg, expect)
            raise CheckpointError(f"{path / CONFIG}: {name} is {have!r} but {want!r} was "
                                  "requested")
        model = cls(cfg, in_channels)
        try:
            tensors = load_file(path / WEIGHTS, device=str(map_location))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{path / WEIGHTS}: cannot be read ({e})") from None
        load_weights(model, tensors, str(path / WEIGHTS))
        return model.to(map_location).eval()

    @classmethod
    def from_diffusers(cls, path: str | Path, map_location: str | torch.device = "cpu",
                       cfg: TokenizerConfig | None = None) -> Tokenizer:
        """A tokenizer holding the weights of the diffusers AutoencoderKL / VQModel folder
        `path` (read with `from_pretrained`, nothing downloads). Its latent statistics are the
        identity until `fit_statistics`; `fitted` says so.

        Args:
            cfg: the bottleneck settings to train it with (its architecture must be the
                folder's; the default: the folder's, with latentlab's default bottleneck
                settings).
        """
        path = Path(path)
        config = hf.read_config(path)
        arch, latent, bottleneck, in_channels = hf.architecture(config)
        own = TokenizerConfig(arch=arch, latent_channels=latent, bottleneck=bottleneck)
        if cfg is not None:
            if (cfg.arch, cfg.latent_channels, cfg.bottleneck.kind) != (
                    dataclasses.replace(arch, width=cfg.arch.width), latent, bottleneck.kind):
                raise ConfigError(f"model: {path} is a {config['_class_name']} with "
                                  f"{hf.describe(own)}, the config asks for "
                                  f"{hf.describe(cfg)}")
            own = cfg
        try:
            source = hf.model_class(config["_class_name"]).from_pretrained(
                path, local_files_only=True, low_cpu_mem_usage=False)
        except (OSError, ValueError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"{path}: cannot be read as a {config['_class_name']} "
                                  f"({first})") from None
        model = cls(own, in_channels)
        tensors = hf.from_diffusers(source.state_dict())
        own_state = model.state_dict()
        for key in own_state.keys() - tensors.keys():
            if not key.startswith(("encoder.", "decoder.")):  # statistics, VQ buffers
                tensors[key] = own_state[key]
        if model.discrete:
            tensors["bottleneck.initialized"] = torch.tensor(True)
            if "bottleneck.embed_sum" in own_state:  # EMA updates start from these codes
                tensors["bottleneck.embed_sum"] = tensors["bottleneck.codebook"].clone()
        load_weights(model, tensors, str(path))
        model.fitted = False
        return model.to(map_location).eval()


def fingerprint(path: str | Path) -> str:
    """A short hash of a saved tokenizer (weights and architecture): the identity a latent cache
    or a codec records, so that data made by another tokenizer is refused."""
    path = Path(path)
    if not (path / CONFIG).exists() and (path / "tokenizer" / CONFIG).exists():
        path = path / "tokenizer"
    files = [path / CONFIG, path / WEIGHTS]
    if not files[0].exists() and hf.is_diffusers_folder(path):
        files = hf.weight_files(path)
    h = hashlib.sha256()
    for name in files:
        with open(name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
    """load_state_dict with one-line errors naming the first missing, extra or misshapen tensor."""
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    if missing or extra:
        what = f"lacks '{missing[0]}'" if missing else f"has unexpected '{extra[0]}'"
        raise CheckpointError(f"{where}: {what}: it was made for another architecture")
    for k, v in tensors.items():
        if v.shape != own[k].shape:
            raise CheckpointError(f"{where}: '{k}' is {tuple(v.shape)} there but "
                                  f"{tuple(own[k].shape)} in the model: it was made for another "
                                  "architecture")
    model.load_state_dict(tensors)
