"""GAN losses shared by the VQGAN-style decomposer discriminator and the generator GAN.

Each pair is (discriminator loss, generator loss), both scalars to minimise, taking raw logits
of any shape (patch maps (B, 1, h, w) or one per sample (B,)). Logits may come in bf16 from
autocast; the means run in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss 0.5 * (E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]) (taming)."""
    return 0.5 * (F.relu(1.0 - logits_real.float()).mean()
                  + F.relu(1.0 + logits_fake.float()).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator (decoder) side of the hinge GAN: -E[D(G(z))]."""
    return -logits_fake.float().mean()


def non_saturating_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """0.5 * (E[-log sigmoid(D(x))] + E[-log(1 - sigmoid(D(G(z))))]) (taming's vanilla_d_loss)."""
    return 0.5 * (F.softplus(-logits_real.float()).mean()
                  + F.softplus(logits_fake.float()).mean())


def non_saturating_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """E[-log sigmoid(D(G(z)))]: strong gradients while the discriminator wins (Goodfellow et
    al. 2014)."""
    return F.softplus(-logits_fake.float()).mean()


GAN_LOSSES = {
    "hinge": (hinge_d_loss, hinge_g_loss),
    "non_saturating": (non_saturating_d_loss, non_saturating_g_loss),
}
"""(discriminator loss, generator loss) by name (`DiscriminatorConfig.loss`,
`GANConfig.loss`)."""


def discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor,
                       loss: str = "hinge") -> torch.Tensor:
    """The discriminator's loss of kind `loss` (a `GAN_LOSSES` key), a scalar to minimise."""
    return GAN_LOSSES[loss][0](logits_real, logits_fake)


def generator_loss(logits_fake: torch.Tensor, loss: str = "hinge") -> torch.Tensor:
    """The generator's (decoder's) adversarial loss of kind `loss`, a scalar to minimise."""
    return GAN_LOSSES[loss][1](logits_fake)
