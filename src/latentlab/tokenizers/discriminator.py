"""The PatchGAN discriminator and GAN losses of VQGAN-style decomposer training.

The loss functions are defined in `latentlab.nn.gan_losses` (shared with the generator GAN,
`latentlab.generators.gan`) and re-exported here.

PatchGAN (Isola et al. 2017, pix2pix) as used by VQGAN (Esser et al. 2021, taming-transformers
`NLayerDiscriminator`, `hinge_d_loss`, `calculate_adaptive_weight`): a stack of 4x4 stride-2
convs with LeakyReLU(0.2) that scores every patch of an image real or fake.

What lives where: `DiscriminatorConfig` holds every knob of the adversarial term, the
architecture (channels, layers) and the schedule and weighting (start, weight,
max_adaptive_weight, loss), as taming's loss config does, so a user finds them in one YAML
section. The decomposer objective owns the logic: it skips both GAN terms before `start`, scores
with `generator_loss` / `discriminator_loss` (which pick the `cfg.loss` pair), and adds
`cfg.weight * adaptive_weight(rec, g, decoder.last_layer, cfg.max_adaptive_weight) * g` to the
decoder's loss.

Legend: B batch, C image channels, H height, W width, h x w the patch-logit map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from latentlab.nn.blocks import group_norm

# the losses live in nn (the generator GAN shares them); re-exported for existing importers
from latentlab.nn.gan_losses import (  # noqa: F401
    GAN_LOSSES,
    discriminator_loss,
    generator_loss,
    hinge_d_loss,
    hinge_g_loss,
    non_saturating_d_loss,
    non_saturating_g_loss,
)


@dataclass
class DiscriminatorConfig:
    channels: int = 64
    """Width of the first conv (taming's ndf); conv n has channels * min(2 ** n, 8)."""
    layers: int = 3
    """Downsampling convs (taming's n_layers); on images too small for all of them, the extra
    ones keep stride 1 (see PatchDiscriminator)."""
    start: int = 0
    """Training step at which the GAN terms switch on, for the decoder's adversarial loss and
    the discriminator's own alike (taming's disc_start): a decoder that cannot yet reconstruct
    only teaches the discriminator a trivial task."""
    weight: float = 0.5
    """Multiplies the adaptive weight of the decoder's adversarial loss (taming's
    disc_weight)."""
    max_adaptive_weight: float = 1e4
    """Upper clamp of the adaptive weight ||grad rec|| / ||grad gan|| (taming uses 1e4)."""
    loss: Literal["hinge", "non_saturating"] = "hinge"
    """GAN loss: hinge (VQGAN's default) or the non-saturating (softplus) loss of Goodfellow
    et al."""

    def __post_init__(self):
        for name in ("channels", "layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.start < 0:
            raise ValueError(f"start: must be >= 0, got {self.start}")
        if not self.weight >= 0:
            raise ValueError(f"weight: must be >= 0, got {self.weight}")
        if not self.max_adaptive_weight > 0:
            raise ValueError(f"max_adaptive_weight: must be > 0, got {self.max_adaptive_weight}")
        if self.loss not in GAN_LOSSES:
            raise ValueError(f"loss: must be one of {', '.join(GAN_LOSSES)}, got {self.loss!r}")


class PatchConv(nn.Conv2d):
    """4x4 conv that halves the map (stride 2, padding 1) while its input is at least 4 pixels
    on each side, and keeps the size (stride 1, padding 1 before and 2 after) below that:
    (B, Cin, H, W) -> (B, Cout, H', W'), H' = H // 2 or H."""

    def __init__(self, cin: int, cout: int, bias: bool = True):
        super().__init__(cin, cout, 4, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) >= 4:
            return F.conv2d(x, self.weight, self.bias, stride=2, padding=1)
        return F.conv2d(F.pad(x, (1, 2, 1, 2)), self.weight, self.bias)


class PatchDiscriminator(nn.Module):
    """(B, C, H, W) images in [-1, 1] -> (B, 1, h, w) real-vs-fake logits, one per patch.

    Layout (taming's NLayerDiscriminator): `layers` 4x4 convs with LeakyReLU(0.2), GroupNorm
    after all but the first; then a conv with GroupNorm and LeakyReLU, and a conv to one channel.

    The 4x4 convs halve the map only while the result stays at least 2x2 (`PatchConv`): with 3
    layers, a 32x32 image is halved three times as in taming (a 4x4 logit map), but an 8x8
    digit, which taming's layout would shrink to nothing, gets 8 -> 4 -> 2 -> 2 and a 2x2 map.
    The extra layers still run (at stride 1), so the depth and capacity the config asks for do
    not depend on the image size, nor do the weights: one checkpoint fits any size.

    The last two convs are 3x3 with padding 1 (taming's are 4x4 and shrink the map by a pixel
    each), so the halvings are the only changes of size: h = H / 2 ** d for d halvings of an
    even size. GroupNorm replaces taming's BatchNorm, whose batch statistics differ between DDP
    ranks and are noisy at small batches.
    """

    def __init__(self, in_channels: int, cfg: DiscriminatorConfig):
        super().__init__()
        self.cfg = cfg
        widths = [cfg.channels * min(2 ** n, 8) for n in range(cfg.layers + 1)]
        # no norm after the first conv (pix2pix / taming); GroupNorm's shift is the others' bias
        layers: list[nn.Module] = [PatchConv(in_channels, widths[0]), nn.LeakyReLU(0.2)]
        for n in range(1, cfg.layers):
            layers += [PatchConv(widths[n - 1], widths[n], bias=False), group_norm(widths[n]),
                       nn.LeakyReLU(0.2)]
        layers += [nn.Conv2d(widths[-2], widths[-1], 3, 1, 1, bias=False),
                   group_norm(widths[-1]), nn.LeakyReLU(0.2),
                   nn.Conv2d(widths[-1], 1, 3, 1, 1)]
        self.net = nn.Sequential(*layers)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """N(0, 0.02) convs and N(1, 0.02) norm scales, zero biases (DCGAN, taming's
        weights_init)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.GroupNorm):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dim() == 4, f"x must be (B, C, H, W), got {tuple(x.shape)}"
        return self.net(x)  # (B, 1, h, w)


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    max_weight: float = 1e4) -> torch.Tensor:
    """||d rec_loss / d last_layer|| / (||d g_loss / d last_layer|| + 1e-4), clamped to
    [0, max_weight] and detached: a scalar that scales the GAN loss so its gradient at the
    decoder's last layer matches the reconstruction's (VQGAN eq. 7, taming's
    calculate_adaptive_weight). Multiply by `DiscriminatorConfig.weight` yourself.

    Both graphs are kept (retain_graph) for the backward of the full loss; torch.autograd.grad
    returns the gradients without accumulating them into `.grad`.
    """
    (rec_grad,) = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    (g_grad,) = torch.autograd.grad(g_loss, last_layer, retain_graph=True)
    weight = rec_grad.float().norm() / (g_grad.float().norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()
