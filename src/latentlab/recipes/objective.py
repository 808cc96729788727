"""The training objective of every decomposer recipe (baseline, dae, coupled, coupled+dae).

Phases, one optimizer each, run in this order every step:
    "autoencoder"     encoder, bottleneck and decoder(s): reconstruction (+ the perceptual
                      distance) + the bottleneck's own loss (+ the coupled regularizer)
                      (+ the adversarial loss)
    "tiny_<width>"    coupled recipes: each tiny generator on the detached latent the
                      autoencoder phase handed on for this micro-batch
    "discriminator"   with the GAN on: the PatchGAN

The recipes are parts plugged into one loss: a DAE swaps in a weak decoder for stage 1 and
freezes the encoder in stage 2 (`recipes.dae`); a coupling standardises the latent, adds the
regulariser and distorts the decoder's input (`recipes.coupled`). With both, stage 1 is coupled
training with the weak decoder, and stage 2 trains the fresh full decoder on the frozen latent,
still with the distortion (that is the decoder's job), without the regularizer.
"""

from __future__ import annotations

import torch
from torch import nn

from latentlab.data.base import EVAL_BATCH, Batch, LatentlabDataset
from latentlab.metrics.perceptual import FrozenFeatures
from latentlab.recipes.baseline import (
    LossConfig,
    evaluate_tokenizer,
    reconstruction_loss,
)
from latentlab.recipes.config import DAEConfig
from latentlab.recipes.coupled import Coupling
from latentlab.recipes.dae import switch_step, weak_decoder
from latentlab.tokenizers.bottlenecks.base import BottleneckOutput
from latentlab.tokenizers.discriminator import (
    PatchDiscriminator,
    adaptive_weight,
    discriminator_loss,
    generator_loss,
)
from latentlab.tokenizers.tokenizer import Tokenizer
from latentlab.training.objective import Objective, PhaseOutput


class TokenizerObjective(Objective):
    """Trains `tokenizer` by the recipe its parts make (see the module docstring).

    Args:
        tokenizer: the decomposer; what is saved at the end.
        loss: reconstruction and GAN settings.
        dae: the DAE's settings, or None for single-stage recipes.
        coupling: the tiny generators of a coupled recipe, or None.
        steps: the run's length (places the DAE switch, then kept in a buffer).
        heldout: (N, C, H, W) held-out images whose latents score the tiny generators.
        prompted: the tiny generators are text-conditioned: batches' `y` are prompt token ids
            (`generation.prompts.Prompted`), and `heldout_prompts` (N, P) those of `heldout`.
        perceptual: the network of the perceptual loss when `loss.perceptual` is on; kept out
            of the module tree (no state, rebuilt from its file on resume).
    """

    def __init__(self, tokenizer: Tokenizer, loss: LossConfig, dae: DAEConfig | None = None,
                 coupling: Coupling | None = None, steps: int = 1,
                 heldout: torch.Tensor | None = None, prompted: bool = False,
                 heldout_prompts: torch.Tensor | None = None,
                 perceptual: FrozenFeatures | None = None):
        super().__init__()
        self.tokenizer, self.cfg, self.coupling = tokenizer, loss, coupling
        self.perceptual = perceptual
        self.prompted = prompted
        # held-out images whose latents score the tiny generators (not saved: data, not state)
        self.register_buffer("heldout", heldout, persistent=False)
        self.register_buffer("heldout_prompts", heldout_prompts, persistent=False)
        self.weak_decoder = (weak_decoder(tokenizer.cfg, tokenizer.in_channels, dae)
                             if dae is not None else None)
        self.unused_parameters = dae is not None  # one decoder idles in each stage
        self.register_buffer("switch", torch.tensor(switch_step(steps, dae) if dae else -1))
        self.register_buffer("last_step", torch.zeros((), dtype=torch.long))
        self.discriminator = None
        if loss.gan:
            self.discriminator = PatchDiscriminator(tokenizer.in_channels, loss.discriminator)
        self.phases = ("autoencoder", *(coupling.phases if coupling else ()),
                       *(("discriminator",) if loss.gan else ()))

    # -- stages -----------------------------------------------------------------------------

    def frozen(self, step: int) -> bool:
        """DAE stage 2: encoder and bottleneck frozen, the full decoder training."""
        return self.weak_decoder is not None and step >= int(self.switch)

    def stage_starts(self, step: int) -> bool:
        return self.weak_decoder is not None and step == int(self.switch)

    def decoder(self, step: int) -> nn.Module:
        """The decoder trained at `step`: the weak one in DAE stage 1, else the tokenizer's."""
        if self.weak_decoder is not None and not self.frozen(step):
            return self.weak_decoder
        return self.tokenizer.decoder

    def phase_parameters(self, phase: str) -> list[nn.Parameter]:
        if phase == "autoencoder":
            modules = [self.tokenizer, self.weak_decoder]
        elif phase == "discriminator":
            modules = [self.discriminator]
        else:
            modules = [self.coupling.tiny[self.coupling.phases.index(phase)]]
        return [p for m in modules if m is not None for p in m.parameters() if p.requires_grad]

    def gan_on(self, step: int) -> bool:
        """The adversarial loss trains the full decoder only (never a DAE's weak one)."""
        return (self.discriminator is not None and step >= self.cfg.discriminator.start
                and self.decoder(step) is self.tokenizer.decoder)

    # -- losses -----------------------------------------------------------------------------

    def forward(self, phase: str, batch: Batch, step: int, handed: dict) -> PhaseOutput:
        if phase == "autoencoder":
            self.last_step.fill_(step)
            self.tokenizer.bottleneck.set_step(step)
            return self.autoencoder_loss(batch.x, step, batch.y if self.prompted else None)
        if phase == "discriminator":
            return self.discriminator_step_loss(batch.x, step)
        k = self.coupling.phases.index(phase)
        return PhaseOutput(*self.coupling.tiny_loss(k, handed["autoencoder"]))

    def encode(self, x: torch.Tensor, step: int) -> BottleneckOutput:
        if not self.frozen(step):
            return self.tokenizer.encode(x)
        # stage 2: eval mode and no grad, so weights, codebook and statistics stay fixed
        self.tokenizer.encoder.eval()
        self.tokenizer.bottleneck.eval()
        with torch.no_grad():
            return self.tokenizer.encode(x)

    def autoencoder_loss(self, x: torch.Tensor, step: int, cond: torch.Tensor | None = None
                         ) -> PhaseOutput:
        """The autoencoder's loss; with a coupling, it hands on what the tiny phases train on
        (with the prompts' ids `cond` of text-conditioned tiny generators)."""
        frozen = self.frozen(step)
        out = self.encode(x, step)
        latent, loss = out.latent, (out.loss if not frozen else out.loss.detach())
        logs = {f"bottleneck/{k}": v.detach() for k, v in out.stats.items()}
        tiny_input = None
        if self.coupling is not None:
            if self.heldout is not None and self.coupling.due(step):
                self.coupling.observe(step, self.heldout_latents(), self.heldout_prompts)
            coupled = self.coupling.couple(out, step, frozen, cond)
            latent, loss, tiny_input = coupled.latent, loss + coupled.loss, coupled.tiny_input
            logs |= coupled.logs
        x_hat = self.decoder(step)(latent)
        pixel_loss = rec_loss = reconstruction_loss(x_hat, x, self.cfg.reconstruction)
        if self.perceptual is not None:  # VQGAN's reconstruction term: pixels + perceptual
            perceptual = self.perceptual.distance(x_hat, x).mean()
            rec_loss = pixel_loss + self.cfg.perceptual * perceptual
            logs["loss/perceptual"] = perceptual.detach()
        loss = loss + rec_loss
        logs |= {"loss/recon": pixel_loss.detach(), "loss/bottleneck": out.loss.detach()}
        if self.weak_decoder is not None:
            logs["dae/stage"] = torch.tensor(2.0 if frozen else 1.0)
        if self.gan_on(step):
            g_loss = generator_loss(self.discriminator(x_hat), self.cfg.discriminator.loss)
            # VQGAN: balance the adversarial gradient against the reconstruction gradient at
            # the decoder's last layer (Esser et al. 2021, eq. 7)
            weight = adaptive_weight(rec_loss, g_loss, self.tokenizer.decoder.last_layer,
                                     self.cfg.discriminator.max_adaptive_weight)
            loss = loss + self.cfg.discriminator.weight * weight * g_loss
            logs |= {"gan/g_loss": g_loss.detach(), "gan/adaptive_weight": weight.detach()}
        return PhaseOutput(loss, logs, tiny_input)

    @torch.no_grad()
    def heldout_latents(self) -> torch.Tensor:
        """(N, L, *S) eval-mode latents of the held-out images (as a latent cache holds them)."""
        was_training = self.tokenizer.training
        self.tokenizer.eval()
        z = torch.cat([self.tokenizer.encode(x).latent for x in self.heldout.split(EVAL_BATCH)])
        self.tokenizer.train(was_training)
        return z

    def discriminator_step_loss(self, x: torch.Tensor, step: int) -> PhaseOutput:
        if not self.gan_on(step):
            # not started yet: a zero loss still touching every parameter keeps DDP in step
            zero = sum(p.sum() for p in self.discriminator.parameters()) * 0.0
            return PhaseOutput(zero, {})
        with torch.no_grad():
            fake = self.tokenizer(x).x_hat
        real_logits, fake_logits = self.discriminator(x), self.discriminator(fake.detach())
        loss = discriminator_loss(real_logits, fake_logits, self.cfg.discriminator.loss)
        return PhaseOutput(loss, {"gan/d_loss": loss.detach(),
                                  "gan/real_logit": real_logits.float().mean().detach(),
                                  "gan/fake_logit": fake_logits.float().mean().detach()})

    # -- evaluation -------------------------------------------------------------------------

    def ema_model(self) -> nn.Module:
        return self.tokenizer

    def evaluate(self, data: LatentlabDataset) -> dict[str, float]:
        return evaluate_tokenizer(self.tokenizer, data, self.decoder(int(self.last_step)))

    @torch.no_grad()
    def visualize(self, batch: Batch) -> torch.Tensor | None:
        """Originals over reconstructions: (2B, C, H, W); nothing for vector data."""
        if batch.x.ndim != 4:
            return None
        decoder = self.decoder(int(self.last_step))
        x_hat = decoder(self.tokenizer.encode(batch.x).latent)
        return torch.cat([batch.x.float(), x_hat.float().clamp(-1, 1)])
