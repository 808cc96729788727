"""A residual MLP denoiser for vectors and 2-D toys.

Legend: B batch, D data features, W width, E time embedding width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from latentlab.nn.embeddings import timestep_embedding


@dataclass
class MLPDenoiserConfig:
    kind: Literal["mlp"] = "mlp"
    """A residual MLP over vectors (D,)."""
    width: int = 256
    """W, the width of every hidden layer."""
    depth: int = 3
    """Number of residual blocks."""
    time_embed: int = 64
    """E, the width of the sinusoidal time embedding before its MLP."""

    def __post_init__(self):
        for name in ("width", "depth", "time_embed"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")


class ResidualBlock(nn.Module):
    """h + Linear(SiLU(Linear(LayerNorm(h)) + Linear(c))): the conditioning enters every block."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.cond = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        return h + self.fc2(F.silu(self.fc1(self.norm(h)) + self.cond(c)))


class MLPDenoiser(nn.Module):
    """Denoiser for (B, D) data: sinusoidal time embedding + class embedding + residual MLP.

    Implements `Denoiser`: forward(x_t (B, D), t (B,), cond) -> (B, D), cond being (B,) int64
    labels, (B, L) int64 prompt ids (with `text`) or None. A conditional model called with cond
    None uses the null class or null prompt (the unconditional model).

    Args:
        dim: D (from the data).
        cfg: the architecture.
        num_classes: 0 for an unconditional model. A conditional model has one more embedding,
            index `num_classes`, the null class used by classifier-free guidance.
        text: a prompt encoder (`latentlab.nn.text.TextEncoder` interface; a submodule,
            excludes num_classes); its pooled embedding, projected to W, takes the class
            embedding's place.
    """

    def __init__(self, dim: int, cfg: MLPDenoiserConfig | None = None, num_classes: int = 0,
                 text: nn.Module | None = None):
        super().__init__()
        if num_classes < 0:
            raise ValueError(f"num_classes: must be >= 0, got {num_classes}")
        if text is not None and num_classes:
            raise ValueError(f"text, num_classes: a model is conditioned on text or on classes, "
                             f"got both (num_classes={num_classes})")
        cfg = cfg or MLPDenoiserConfig()
        self.dim, self.cfg, self.num_classes = dim, cfg, num_classes
        self.input = nn.Linear(dim, cfg.width)
        self.time = nn.Sequential(
            nn.Linear(cfg.time_embed, cfg.width), nn.SiLU(), nn.Linear(cfg.width, cfg.width)
        )
        self.classes = nn.Embedding(num_classes + 1, cfg.width) if num_classes else None
        self.text = text
        if text is not None:
            self.prompt = nn.Linear(text.width, cfg.width)
        self.blocks = nn.ModuleList(ResidualBlock(cfg.width) for _ in range(cfg.depth))
        self.out = nn.Sequential(nn.LayerNorm(cfg.width), nn.SiLU(), nn.Linear(cfg.width, dim))
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Every init decision in one place."""
        if self.classes is not None:
            nn.init.normal_(self.classes.weight, std=0.02)
        # zero-init the output so training starts from the prediction 0 (as DiT's final layer)
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    @property
    def null_class(self) -> int | Tensor | None:
        """The null condition of classifier-free guidance: the label index of "no class" (an
        int), the null prompt's (L,) ids for a text model, or None if unconditional."""
        if self.text is not None:
            return self.text.null_ids
        return self.num_classes if self.num_classes else None

    def forward(self, x_t: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        assert x_t.ndim == 2 and x_t.shape[1] == self.dim, (
            f"x_t must be (B, {self.dim}), got {tuple(x_t.shape)}")
        assert t.shape == (x_t.shape[0],), f"t must be (B,), got {tuple(t.shape)}"
        c = self.time(timestep_embedding(t, self.cfg.time_embed).to(x_t.dtype))  # (B, W)
        if self.classes is not None:
            if cond is None:
                cond = torch.full_like(t, self.num_classes, dtype=torch.long)
            assert cond.shape == t.shape, f"cond must be (B,), got {tuple(cond.shape)}"
            c = c + self.classes(cond)
        elif self.text is not None:
            ids = self.text.null(t.shape[0]) if cond is None else cond
            assert ids.shape == (t.shape[0], self.text.max_len), (
                f"cond must be (B, {self.text.max_len}) prompt ids, got {tuple(ids.shape)}")
            c = c + self.prompt(self.text(ids).pooled.to(c.dtype))
        elif cond is not None:
            raise ValueError("this MLPDenoiser is unconditional (num_classes=0) but got cond")
        c = F.silu(c)
        h = self.input(x_t)  # (B, W)
        for block in self.blocks:
            h = block(h, c)
        return self.out(h)  # (B, D)
