"""Training objectives of the generator families, for the one training loop.

Every objective takes batches whose `x` is what the generator models (normalised latents,
pixels, vectors, or int64 token indices) and whose `y` are its conditions: (B,) class labels or
(B, L) prompt token ids; conditional models drop them to the null class or the null prompt with
probability `label_dropout` for classifier-free guidance. Held-out
figures are computed with a fixed seed, so they compare across checkpoints and runs.

Legend: B batch, N tokens per item, V vocabulary (codebook) size.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from latentlab.data.base import Batch, LatentlabDataset, eval_batches
from latentlab.generators.guidance import drop_labels
from latentlab.generators.maskgit import masked_loss
from latentlab.generators.pixelcnn import pixels_to_tokens, tokens_to_pixels
from latentlab.generators.process import Process
from latentlab.nn.gan_losses import discriminator_loss, generator_loss
from latentlab.training.objective import Objective, PhaseOutput

EVAL_SEED = 0
Render = Callable[[torch.Tensor], torch.Tensor]  # generated items -> images (B, C, H, W)


class GeneratorObjective(Objective):
    """Shared parts: the model, label dropout, EMA target, preview grids.

    `null` is what "no condition" is fed as (`generation.models.null_condition`): the null
    class index, the null prompt's (L,) ids, or None for an unconditional model.
    """

    def __init__(self, model: nn.Module, null: int | torch.Tensor | None, label_dropout: float,
                 render: Render | None = None):
        super().__init__()
        self.model = model
        self.null, self.label_dropout = null, label_dropout
        self.render = render

    def train_cond(self, y: torch.Tensor) -> torch.Tensor | None:
        if self.null is None:
            return None
        return drop_labels(y, self.label_dropout, self.null)

    def eval_cond(self, y: torch.Tensor) -> torch.Tensor | None:
        return y if self.null is not None else None

    def ema_model(self) -> nn.Module:
        return self.model

    def generate(self, n: int, cond: torch.Tensor | None, shape: tuple[int, ...],
                 generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def visualize(self, batch: Batch) -> torch.Tensor | None:
        """Samples for the labels of the preview batch, rendered as images."""
        if self.render is None:
            return None
        g = torch.Generator(batch.x.device).manual_seed(EVAL_SEED)
        items = self.generate(len(batch.y), self.eval_cond(batch.y), tuple(batch.x.shape[1:]),
                              g)
        return self.render(items)


class ProcessObjective(GeneratorObjective):
    """Flow matching, DDPM or VP-SDE: the process's regression loss on its denoiser."""

    def __init__(self, model: nn.Module, process: Process, null: int | torch.Tensor | None,
                 label_dropout: float, render: Render | None = None, preview_steps: int = 20):
        super().__init__(model, null, label_dropout, render)
        self.process, self.preview_steps = process, preview_steps

    def forward(self, phase: str, batch: Batch, step: int, handed: dict) -> PhaseOutput:
        # noise and times come from the global RNG, which the loop seeds per (rank, step)
        out = self.process.loss(self.model, batch.x, self.train_cond(batch.y))
        return PhaseOutput(out.loss, {"loss/gen": out.loss.detach()})

    @torch.no_grad()
    def evaluate(self, data: LatentlabDataset) -> dict[str, float]:
        device = next(self.model.parameters()).device
        g = torch.Generator(device).manual_seed(EVAL_SEED)
        total = 0.0
        for batch in eval_batches(data, device):
            out = self.process.loss(self.model, batch.x, self.eval_cond(batch.y), generator=g)
            total += float(out.per_item.sum())
        return {"loss": total / len(data)}

    def generate(self, n, cond, shape, generator):
        return self.process.sample(self.model, (n, *shape), cond, steps=self.preview_steps,
                                   generator=generator)


class ARObjective(GeneratorObjective):
    """Next-token cross-entropy of the autoregressive transformer over raster-order indices."""

    def forward(self, phase: str, batch: Batch, step: int, handed: dict) -> PhaseOutput:
        tokens = self.tokens(batch.x)  # (B, N)
        logits = self.model(tokens, self.train_cond(batch.y))  # (B, N, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), tokens.flatten())
        return PhaseOutput(loss, {"loss/nll": loss.detach()})

    @torch.no_grad()
    def evaluate(self, data: LatentlabDataset) -> dict[str, float]:
        """Held-out negative log-likelihood per token, in nats and in bits."""
        device = next(self.model.parameters()).device
        total, count = 0.0, 0
        for batch in eval_batches(data, device):
            tokens = self.tokens(batch.x)
            total -= float(self.model.log_prob(tokens, self.eval_cond(batch.y)).sum())
            count += tokens.numel()
        return {"nll": total / count, "bits_per_token": total / count / math.log(2)}

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """A batch's items -> (B, N) raster-order tokens."""
        return x.reshape(len(x), -1)

    def generate(self, n, cond, shape, generator):
        return self.model.sample(n, cond, generator=generator).reshape(n, *shape)


class MaskGITObjective(GeneratorObjective):
    """Cross-entropy of the tokens hidden by a cosine-schedule mask (MaskGIT), masked positions
    only. There is no exact likelihood: the held-out figure is the same cross-entropy at masks
    drawn with a fixed seed, in nats per masked token, not bits per token."""

    def __init__(self, model: nn.Module, null: int | torch.Tensor | None, label_dropout: float,
                 render: Render | None = None, preview_steps: int = 8):
        super().__init__(model, null, label_dropout, render)
        self.preview_steps = preview_steps

    def forward(self, phase: str, batch: Batch, step: int, handed: dict) -> PhaseOutput:
        # masks come from the global RNG, which the loop seeds per (rank, step)
        tokens = batch.x.reshape(len(batch.x), -1)  # (B, N)
        out = masked_loss(self.model, tokens, self.train_cond(batch.y))
        return PhaseOutput(out.loss, {"loss/masked_ce": out.loss.detach()})

    @torch.no_grad()
    def evaluate(self, data: LatentlabDataset) -> dict[str, float]:
        """Held-out masked-token cross-entropy (nats per masked token)."""
        device = next(self.model.parameters()).device
        g = torch.Generator(device).manual_seed(EVAL_SEED)
        total, count = 0.0, 0
        for batch in eval_batches(data, device):
            tokens = batch.x.reshape(len(batch.x), -1)
            out = masked_loss(self.model, tokens, self.eval_cond(batch.y), generator=g)
            total, count = total + float(out.per_item.sum()), count + int(out.masked.sum())
        return {"masked_ce": total / count}

    def generate(self, n, cond, shape, generator):
        tokens = self.model.sample(n, cond, steps=self.preview_steps, generator=generator)
        return tokens.reshape(n, *shape)


class PixelCNNObjective(ARObjective):
    """The autoregressive cross-entropy of a PixelCNN (the same interface as the transformer's).
    Over pixels (`levels` > 0) the images are quantised to one joint token per pixel, and
    generated tokens turned back into images."""

    def __init__(self, model: nn.Module, null: int | torch.Tensor | None, label_dropout: float,
                 render: Render | None = None, levels: int = 0):
        super().__init__(model, null, label_dropout, render)
        self.levels = levels

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        if self.levels:
            x = pixels_to_tokens(x, self.levels)  # (B, C, H, W) -> (B, H, W)
        return x.reshape(len(x), -1)

    def generate(self, n, cond, shape, generator):
        if not self.levels:
            return super().generate(n, cond, shape, generator)
        tokens = self.model.sample(n, cond, generator=generator).reshape(n, *shape[1:])
        return tokens_to_pixels(tokens, self.levels, shape[0])  # (n, C, H, W)


class GANObjective(GeneratorObjective):
    """Two phases each step, as DCGAN: the discriminator on real vs generated items, then the
    generator against the updated discriminator."""

    phases = ("discriminator", "generator")

    def __init__(self, model: nn.Module, discriminator: nn.Module,
                 null: int | torch.Tensor | None, loss: str, render: Render | None = None):
        super().__init__(model, null, 0.0, render)
        self.discriminator, self.loss_kind = discriminator, loss

    def phase_parameters(self, phase: str):
        return list((self.model if phase == "generator" else self.discriminator).parameters())

    def fake(self, batch: Batch) -> torch.Tensor:
        """(B, *shape) generated items, differentiable w.r.t. the generator."""
        noise = torch.randn(len(batch.x), self.model.cfg.noise_dim, device=batch.x.device)
        return self.model(noise, self.eval_cond(batch.y))

    def forward(self, phase: str, batch: Batch, step: int, handed: dict) -> PhaseOutput:
        cond = self.eval_cond(batch.y)
        if phase == "generator":
            loss = generator_loss(self.discriminator(self.fake(batch), cond), self.loss_kind)
            return PhaseOutput(loss, {"loss/g": loss.detach()})
        with torch.no_grad():
            fake = self.fake(batch)
        # real and generated items in one call: the same normalisation statistics for both
        both_cond = None if cond is None else torch.cat([cond, cond])
        logits = self.discriminator(torch.cat([batch.x, fake.to(batch.x.dtype)]), both_cond)
        real_logits, fake_logits = logits.chunk(2)
        loss = discriminator_loss(real_logits, fake_logits, self.loss_kind)
        return PhaseOutput(loss, {"loss/d": loss.detach()})

    def generate(self, n, cond, shape, generator):
        return self.model.sample(n, cond, generator=generator, device=generator.device)
