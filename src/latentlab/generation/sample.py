"""`latentlab sample`: draw from a trained generator, decode through its tokenizer, write files.

The samples file is a public contract (documented in the README):
    samples.npz   images  uint8 (N, H, W, C), pixel values 0..255
                  labels  int64 (N,), the class each sample was drawn for (-1: unconditional)
For a generator of vectors (the mixture toy) `images` is replaced by `vectors` float32 (N, D).
With layout "adm" the file also holds the arrays the ADM evaluation suite reads (Dhariwal &
Nichol 2021, `evaluations/evaluator.py`): arr_0 = images, arr_1 = labels (conditional only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from latentlab import pixels
from latentlab.errors import UserError
from latentlab.generation.config import GeneratorRunConfig
from latentlab.generation.models import Modelled, build_process
from latentlab.generation.train import load_network
from latentlab.generators.process import Process
from latentlab.io import atomic_path
from latentlab.tokenizers.tokenizer import Tokenizer


@dataclass
class LoadedGenerator:
    """A trained generator ready to sample: network, process (if any) and its tokenizer."""

    cfg: GeneratorRunConfig
    model: torch.nn.Module
    process: Process | None
    what: Modelled
    tokenizer: Tokenizer | None

    @classmethod
    def load(cls, run: str | Path, device: str | torch.device = "cpu") -> LoadedGenerator:
        cfg, what, model = load_network(run)
        tokenizer = Tokenizer.load(cfg.tokenizer, map_location=device) if cfg.tokenizer else None
        return cls(cfg, model.to(device), build_process(cfg.generator), what, tokenizer)

    def check_request(self, labels: torch.Tensor | None, steps: int, guidance: float | None):
        """One-line errors for requests this generator cannot serve."""
        if steps < 1:
            raise UserError(f"--steps must be >= 1, got {steps}")
        if labels is not None:
            if not self.what.num_classes:
                raise UserError("--labels: this generator is unconditional")
            bad = labels[(labels < 0) | (labels >= self.what.num_classes)]
            if len(bad):
                raise UserError(f"--labels: {int(bad[0])} is outside the trained classes "
                                f"0..{self.what.num_classes - 1}")
        if guidance is not None and not self.what.num_classes:
            raise UserError("--cfg: classifier-free guidance needs a class-conditional "
                            "generator; this one is unconditional")
        if guidance is not None and self.cfg.generator.family == "gan":
            raise UserError("--cfg: a GAN has no classifier-free guidance")

    @torch.no_grad()
    def generate(self, labels: torch.Tensor | None, n: int, steps: int, guidance: float | None,
                 generator: torch.Generator, sampler: str = "") -> torch.Tensor:
        """(n, *shape) generated items (normalised latents, indices, pixels or vectors)."""
        device = next(self.model.parameters()).device
        cond = labels.to(device) if labels is not None else None
        family = self.cfg.generator.family
        if family == "ar":
            tokens = self.model.sample(n, cond, guidance=guidance, generator=generator)
            return tokens.reshape(n, *self.what.shape)
        if family == "gan":
            return self.model.sample(n, cond, generator=generator, device=device)
        options = {"sampler": sampler or self.cfg.generator.sampler or None}
        return self.process.sample(self.model, (n, *self.what.shape), cond, steps=steps,
                                   generator=generator, guidance=guidance, device=device,
                                   **options)

    @torch.no_grad()
    def decode(self, items: torch.Tensor) -> torch.Tensor:
        """Generated items -> images in [-1, 1] (B, C, H, W), or vectors (B, D)."""
        if self.tokenizer is None:
            return items.float().clamp(-1, 1) if items.ndim == 4 else items.float()
        latent = items if self.what.kind == "indices" else self.tokenizer.denormalize(
            items.float())
        return self.tokenizer.decode(latent, batch_size=256).float()


def default_labels(n: int, num_classes: int) -> torch.Tensor | None:
    """Labels 0, 1, ..., K-1, 0, 1, ... for a conditional generator; None otherwise."""
    return torch.arange(n) % num_classes if num_classes else None


def sample_to_file(run: str | Path, n: int, out: str | Path, labels: list[int] | None = None,
                   steps: int | None = None, guidance: float | None = None, seed: int = 0,
                   grid: str | Path | None = None, sampler: str = "",
                   batch_size: int = 500, layout: str = "latentlab") -> dict:
    """Draw `n` samples from the generator in `run`, write `out` (.npz) and optionally a grid.

    `layout` "adm" adds arr_0 (and arr_1 for labelled samples) for the ADM evaluation suite.
    """
    loaded = LoadedGenerator.load(run)
    steps = steps if steps is not None else loaded.cfg.generator.steps
    if labels:
        chosen = torch.tensor(labels, dtype=torch.int64)
        chosen = chosen.repeat((n + len(chosen) - 1) // len(chosen))[:n]
    else:
        chosen = default_labels(n, loaded.what.num_classes)
    loaded.check_request(chosen, steps, guidance)
    if n < 1:
        raise UserError(f"--n must be >= 1, got {n}")
    g = torch.Generator().manual_seed(seed)
    parts = []
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        cond = chosen[start:start + m] if chosen is not None else None
        parts.append(loaded.decode(loaded.generate(cond, m, steps, guidance, g, sampler)).cpu())
    samples = torch.cat(parts)
    saved_labels = (chosen if chosen is not None else torch.full((n,), -1)).numpy()
    arrays = ({"images": pixels.to_hwc_uint8(samples)} if samples.ndim == 4
              else {"vectors": samples.numpy().astype(np.float32)})
    if layout == "adm":
        if samples.ndim != 4:
            raise UserError("--format adm: the ADM layout holds images; this generator makes "
                            "vectors")
        arrays["arr_0"] = arrays["images"]
        if chosen is not None:
            arrays["arr_1"] = saved_labels.astype(np.int64)
    with atomic_path(Path(out)) as tmp, open(tmp, "wb") as f:
        np.savez(f, labels=saved_labels.astype(np.int64), **arrays)
    if grid and samples.ndim == 4:
        pixels.save_grid(samples[:100], grid, nrow=10, scale=4)
    return {"n": n, "out": str(out), "steps": steps, "guidance": guidance}
