"""DCGAN-style generator and discriminator (Radford et al. 2016) over vectors, latents or pixels.

`GANGenerator` maps noise z ~ N(0, I) (and a class label) to a sample of `shape`;
`GANDiscriminator` scores a sample with one real-vs-fake logit. Train them with the paired losses
of `latentlab.nn.gan_losses` picked by `GANConfig.loss`, alternating a discriminator step on
(real, G(z).detach()) and a generator step on D(G(z)), each with its own optimizer (DCGAN:
Adam, lr 2e-4, betas (0.5, 0.999)).

Shapes: `(D,)` vectors get MLPs; `(C, H, W)` maps with H = W a power of two in [4, 32] get a
conv stack. Latents are normalised to ~N(0, 1), not bounded, so the generator has no output
nonlinearity by default; pixels in [-1, 1] set `GANConfig.bounded` for DCGAN's tanh.

Choices that differ from DCGAN, and why:
- GroupNorm instead of BatchNorm in both networks: batch statistics differ between DDP ranks,
  are noisy at small batches, and make D's score of a sample depend on the rest of its batch
  (and on whether real and fake share a batch). Spectral norm was the alternative; it keeps
  power-iteration buffers that update in every training forward (another per-rank state) and
  GroupNorm is what the PatchGAN discriminator of the tokenizers already uses.
- Nearest x2 + conv3x3 instead of 4x4 transposed convs to upsample: no checkerboard artefacts
  (Odena et al. 2016, "Deconvolution and Checkerboard Artifacts").
- Class conditioning: the generator concatenates a label embedding to the noise (conditional
  GAN, Mirza & Osindero 2014); the discriminator is a projection discriminator (Miyato &
  Koyama 2018), logit = psi(phi(x)) + <embed(y), phi(x)> on the pooled features phi(x).
- Text conditioning (a `text` encoder given): the same, with embed(y) a linear projection of
  the pooled prompt embedding; cond None means the null prompt. Each network reads prompts
  through its own encoder (a submodule, trained by that network's optimizer). A GAN has no
  classifier-free guidance: it draws a sample in one pass, with no unconditional prediction to
  extrapolate from.

Legend: B batch, Z noise_dim, D vector features, C channels, H height, W width, F features,
L prompt tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from einops import rearrange
from torch import Tensor, nn

from latentlab.nn import num_parameters
from latentlab.nn.blocks import group_norm
from latentlab.nn.gan_losses import GAN_LOSSES

MIN_SIZE, MAX_SIZE = 4, 32
"""Image / latent side lengths the conv stacks support (powers of two in between)."""


@dataclass
class GANConfig:
    kind: Literal["gan"] = "gan"
    """A generator and a discriminator, MLPs for vectors, conv stacks for maps."""
    noise_dim: int = 64
    """Z, the width of the generator's input noise z ~ N(0, I)."""
    width: int = 128
    """Hidden width of the vector MLPs; for maps, the channels at full resolution (generator)
    and of the first conv (discriminator), doubling per halving of the resolution."""
    loss: Literal["hinge", "non_saturating"] = "hinge"
    """The (discriminator, generator) loss pair of `latentlab.nn.gan_losses.GAN_LOSSES`."""
    depth: int = 3
    """Hidden layers of the vector MLPs (generator and discriminator alike)."""
    bounded: bool = False
    """End the generator with tanh, for pixels in [-1, 1] (DCGAN). Leave False for latents,
    which are normalised to ~N(0, 1) and not bounded."""

    def __post_init__(self):
        for name in ("noise_dim", "width", "depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.loss not in GAN_LOSSES:
            raise ValueError(f"loss: must be one of {', '.join(GAN_LOSSES)}, got {self.loss!r}")


def _check_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """`shape` as a tuple, validated: (D,) or (C, H, W) with H = W a power of two in [4, 32]."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 1 and shape[0] >= 1:
        return shape
    if len(shape) == 3:
        c, h, w = shape
        if c >= 1 and h == w and MIN_SIZE <= h <= MAX_SIZE and h & (h - 1) == 0:
            return shape
    raise ValueError(f"shape: must be (D,) or (C, H, W) with H = W a power of two in "
                     f"[{MIN_SIZE}, {MAX_SIZE}], got {shape}")


def _check_cond(cond: Tensor | None, num_classes: int, batch: int) -> None:
    """Raise ValueError unless `cond` fits the model: None when unconditional, else (B,) int64
    labels in [0, num_classes). The range check reads the labels (a device sync on GPUs)."""
    if not num_classes:
        if cond is not None:
            raise ValueError("this GAN is unconditional (num_classes=0) but got cond")
        return
    if cond is None:
        raise ValueError(f"this GAN is class-conditional (num_classes={num_classes}): "
                         "cond is required")
    if cond.shape != (batch,) or cond.dtype != torch.long:
        raise ValueError(f"cond must be (B,) = ({batch},) int64, got {tuple(cond.shape)} "
                         f"{cond.dtype}")
    if batch and (cond.min() < 0 or cond.max() >= num_classes):
        raise ValueError(f"cond: labels must be in [0, {num_classes}), got "
                         f"[{cond.min().item()}, {cond.max().item()}]")


def _embed_cond(net: GANGenerator | GANDiscriminator, cond: Tensor | None,
                batch: int) -> Tensor | None:
    """The condition's embedding (B, Z or F): the label's, or the projected pooled prompt's
    (cond (B, L) ids, None = the null prompt) for a text model; None when unconditional.
    Raises ValueError when `cond` does not fit."""
    if net.text is None:
        _check_cond(cond, net.num_classes, batch)
        return None if net.classes is None else net.classes(cond)
    ids = net.text.null(batch) if cond is None else cond
    if ids.shape != (batch, net.text.max_len):
        raise ValueError(f"cond must be (B, L) = ({batch}, {net.text.max_len}) prompt ids, got "
                         f"{tuple(ids.shape)}")
    return net.prompt(net.text(ids).pooled.to(net.prompt.weight.dtype))


def _check_text(text: nn.Module | None, num_classes: int) -> None:
    if text is not None and num_classes:
        raise ValueError(f"text, num_classes: a GAN is conditioned on text or on classes, got "
                         f"both (num_classes={num_classes})")


def _dcgan_init(module: nn.Module) -> None:
    """N(0, 0.02) conv / linear / embedding weights, zero biases, N(1, 0.02) norm scales
    (DCGAN section 4: "All weights were initialized from a zero-centered Normal distribution
    with standard deviation 0.02"; the norm scales as in DCGAN's reference code). A text
    encoder (`module.text`) keeps its own initialisation."""
    text = getattr(module, "text", None)
    own = set(text.modules()) if text is not None else set()
    for m in module.modules():
        if m in own:
            continue
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.GroupNorm):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class GANGenerator(nn.Module):
    """Noise (B, Z) and labels (B,) -> samples (B, *shape).

    Vectors (D,): MLP of `depth` Linear + ReLU layers of `width`, then Linear to D.
    Maps (C, H, W): Linear projection to (width * 2**n, 4, 4) with n = log2(H / 4), then n
    blocks of nearest x2 -> conv3x3 -> GroupNorm -> ReLU halving the channels, then conv3x3 to C.
    The label embedding (width Z) is concatenated to the noise; with a `text` encoder (a
    submodule; excludes num_classes) the pooled prompt embedding projected to Z takes its place.
    """

    def __init__(self, cfg: GANConfig, shape: tuple[int, ...], num_classes: int = 0,
                 text: nn.Module | None = None):
        super().__init__()
        _check_text(text, num_classes)
        self.cfg, self.shape, self.num_classes = cfg, _check_shape(shape), num_classes
        self.classes = nn.Embedding(num_classes, cfg.noise_dim) if num_classes else None
        self.text = text
        if text is not None:  # a linear map of the pooled prompt, in the label table's place
            self.prompt = nn.Linear(text.width, cfg.noise_dim)
        z_in = cfg.noise_dim * (2 if num_classes or text is not None else 1)
        if len(self.shape) == 1:
            layers: list[nn.Module] = []
            for i in range(cfg.depth):
                layers += [nn.Linear(z_in if i == 0 else cfg.width, cfg.width), nn.ReLU()]
            self.net = nn.Sequential(*layers, nn.Linear(cfg.width, self.shape[0]))
        else:
            c, h, _ = self.shape
            n_up = int(math.log2(h // MIN_SIZE))
            chans = [cfg.width * 2 ** (n_up - i) for i in range(n_up + 1)]  # 4x4 ... H x H
            self.project = nn.Linear(z_in, chans[0] * MIN_SIZE * MIN_SIZE, bias=False)
            layers = [group_norm(chans[0]), nn.ReLU()]
            for cin, cout in zip(chans[:-1], chans[1:], strict=True):
                # GroupNorm's shift is the conv's bias
                layers += [nn.Upsample(scale_factor=2.0, mode="nearest"),
                           nn.Conv2d(cin, cout, 3, padding=1, bias=False), group_norm(cout),
                           nn.ReLU()]
            self.net = nn.Sequential(*layers, nn.Conv2d(chans[-1], c, 3, padding=1))
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DCGAN's N(0, 0.02) init for every layer (see `_dcgan_init`)."""
        _dcgan_init(self)

    def num_parameters(self) -> int:
        """Trainable parameters."""
        return num_parameters(self)

    def forward(self, noise: Tensor, cond: Tensor | None = None) -> Tensor:
        """noise (B, Z), cond (B,) int64 labels, (B, L) int64 prompt ids or None -> samples
        (B, *shape)."""
        assert noise.ndim == 2 and noise.shape[1] == self.cfg.noise_dim, (
            f"noise must be (B, {self.cfg.noise_dim}), got {tuple(noise.shape)}")
        embedding = _embed_cond(self, cond, noise.shape[0])  # (B, Z) or None
        z = noise
        if embedding is not None:
            z = torch.cat([noise, embedding.to(noise.dtype)], dim=1)  # (B, 2Z)
        if len(self.shape) == 1:
            x = self.net(z)  # (B, D)
        else:
            h = rearrange(self.project(z), "b (c h w) -> b c h w", h=MIN_SIZE, w=MIN_SIZE)
            x = self.net(h)  # (B, C, H, W)
        return torch.tanh(x) if self.cfg.bounded else x

    @torch.no_grad()
    def sample(self, n: int, cond: Tensor | None = None, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> Tensor:
        """n samples (n, *shape) from noise drawn with `generator` on `device` (default: the
        parameters' device), in the parameters' dtype. Runs without gradients."""
        param = next(self.parameters())
        device = param.device if device is None else torch.device(device)
        noise = torch.randn(n, self.cfg.noise_dim, generator=generator, device=device,
                            dtype=param.dtype)
        return self(noise, cond)


class GANDiscriminator(nn.Module):
    """Samples (B, *shape) and labels (B,) -> real-vs-fake logits (B,).

    Vectors (D,): `depth` Linear + LeakyReLU(0.2) layers of `width`, no norm (DCGAN's first
    layer has none either, and a 2-D toy needs none).
    Maps (C, H, W): conv3x3 to `width` with LeakyReLU(0.2), then log2(H / 4) 4x4 stride-2 convs
    doubling the channels, each with GroupNorm and LeakyReLU(0.2), down to 4x4; features
    phi(x) are the sum over the 4x4 map (SNGAN / projection discriminator, Miyato & Koyama 2018).
    Logit = linear(phi(x)) + <embed(y), phi(x)> when class-conditional; with a `text` encoder
    (a submodule; excludes num_classes) embed(y) is the pooled prompt embedding projected to F.
    """

    def __init__(self, cfg: GANConfig, shape: tuple[int, ...], num_classes: int = 0,
                 text: nn.Module | None = None):
        super().__init__()
        _check_text(text, num_classes)
        self.cfg, self.shape, self.num_classes = cfg, _check_shape(shape), num_classes
        if len(self.shape) == 1:
            layers: list[nn.Module] = []
            for i in range(cfg.depth):
                layers += [nn.Linear(self.shape[0] if i == 0 else cfg.width, cfg.width),
                           nn.LeakyReLU(0.2)]
            features = cfg.width
        else:
            c, h, _ = self.shape
            n_down = int(math.log2(h // MIN_SIZE))
            chans = [cfg.width * 2 ** i for i in range(n_down + 1)]
            # no norm after the first conv (DCGAN)
            layers = [nn.Conv2d(c, chans[0], 3, padding=1), nn.LeakyReLU(0.2)]
            for cin, cout in zip(chans[:-1], chans[1:], strict=True):
                layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=False),
                           group_norm(cout), nn.LeakyReLU(0.2)]
            features = chans[-1]
        self.net = nn.Sequential(*layers)
        self.logit = nn.Linear(features, 1)
        self.classes = nn.Embedding(num_classes, features) if num_classes else None
        self.text = text
        if text is not None:  # a linear map of the pooled prompt, in the label table's place
            self.prompt = nn.Linear(text.width, features)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DCGAN's N(0, 0.02) init for every layer (see `_dcgan_init`)."""
        _dcgan_init(self)

    def num_parameters(self) -> int:
        """Trainable parameters."""
        return num_parameters(self)

    def features(self, x: Tensor) -> Tensor:
        """phi(x): samples (B, *shape) -> features (B, F)."""
        assert x.shape[1:] == self.shape, (
            f"x must be (B, {', '.join(map(str, self.shape))}), got {tuple(x.shape)}")
        h = self.net(x)  # (B, F) or (B, F, 4, 4)
        return h if h.ndim == 2 else h.sum(dim=(2, 3))  # (B, F)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """x (B, *shape), cond (B,) int64 labels, (B, L) int64 prompt ids or None -> logits
        (B,)."""
        embedding = _embed_cond(self, cond, x.shape[0])  # (B, F) or None
        phi = self.features(x)  # (B, F)
        logits = self.logit(phi).squeeze(1)  # (B,)
        if embedding is not None:
            # projection discriminator (Miyato & Koyama 2018, eq. 3)
            logits = logits + (embedding.to(phi.dtype) * phi).sum(dim=1)
        return logits
