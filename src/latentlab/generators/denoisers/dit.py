"""DiT: a diffusion transformer denoiser over latents with adaLN-Zero conditioning (Peebles & Xie,
"Scalable Diffusion Models with Transformers", 2023; after facebookresearch/DiT `models.py`).

The latent is cut into p x p patches, each patch becomes a token, the tokens pass through
transformer blocks whose LayerNorms are modulated by the timestep + class embedding, and a linear
head maps every token back to its patch.

Text conditioning (given a `text` encoder) follows PixArt-alpha (Chen et al. 2023): each block
runs self-attention -> cross-attention to the prompt's tokens -> MLP, and the pooled prompt
embedding takes the class embedding's place in the adaLN conditioning vector. The prompt is
encoded once per forward and shared by every block.

Legend: B batch, C latent channels, H = W latent side (input_size), p patch size, T = (H/p)(W/p)
tokens, D width, L prompt tokens, E text width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from latentlab.nn import num_parameters
from latentlab.nn.embeddings import timestep_embedding
from latentlab.nn.text import CrossAttention, TextContext
from latentlab.nn.transformer import MLP, SelfAttention

TIME_FREQUENCIES = 256
"""Width of the sinusoidal timestep embedding fed to the timestep MLP (DiT's
`frequency_embedding_size`)."""


@dataclass
class DiTConfig:
    kind: Literal["dit"] = "dit"
    """A diffusion transformer over (C, H, W) latents."""
    patch_size: int = 2
    """p: each p x p patch of the latent is one token; must divide the latent's side."""
    width: int = 128
    """D, the token width. Plain config, so the scaling-law recipe can build widths in a
    geometric series (heads must still divide it)."""
    depth: int = 4
    """Transformer blocks."""
    heads: int = 4
    """Attention heads; must divide width."""
    mlp_ratio: float = 4.0
    """MLP hidden width = int(width * mlp_ratio)."""

    def __post_init__(self):
        for name in ("patch_size", "width", "depth", "heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.width % self.heads:
            raise ValueError(f"heads: must divide width {self.width}, got {self.heads}")
        if self.width % 4:
            raise ValueError(f"width: must be a multiple of 4 (2-D sin-cos positional "
                             f"embedding), got {self.width}")
        if not self.mlp_ratio > 0:
            raise ValueError(f"mlp_ratio: must be > 0, got {self.mlp_ratio}")


DIT_PRESETS: dict[str, dict] = {
    # width x depth, heads keep 64 channels per head (as DiT-S/B/L/XL) except tiny's 64 = 128/2;
    # tiny and small are the coupled recipe's tiny generators, base is DiT-S sized; parameters
    # at the defaults (8x8x4 latent, p = 2): 1.3M, 9.7M, 32.5M
    "tiny": dict(width=128, depth=4, heads=2),
    "small": dict(width=256, depth=8, heads=4),
    "base": dict(width=384, depth=12, heads=6),
}
"""Architecture presets: `DiT(dit_config("small"), in_channels=4, input_size=8)`."""


def dit_config(preset: str, **overrides) -> DiTConfig:
    """A DiTConfig from a preset of DIT_PRESETS with fields overridden."""
    if preset not in DIT_PRESETS:
        raise ValueError(f"preset: unknown DiT preset {preset!r}, choose from "
                         f"{sorted(DIT_PRESETS)}")
    return DiTConfig(**{**DIT_PRESETS[preset], **overrides})


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """Cut (B, C, H, W) into patches, raster order: -> (B, T, p * p * C), each patch's features in
    (row, column, channel) order."""
    return rearrange(x, "b c (h p) (w q) -> b (h w) (p q c)", p=p, q=p)


def unpatchify(tokens: torch.Tensor, p: int, h: int) -> torch.Tensor:
    """Inverse of `patchify` for h x h patches: (B, T, p * p * C) -> (B, C, h p, h p)."""
    return rearrange(tokens, "b (h w) (p q c) -> b c (h p) (w q)", h=h, p=p, q=p)


def sincos_pos_embed_2d(width: int, grid: int) -> torch.Tensor:
    """Fixed 2-D sin-cos positional embedding (MAE / DiT): (grid * grid, width), raster order.
    The first half of the channels encodes the column, the second half the row, each as
    [sin, cos] of the coordinate times frequencies 1 / 10000^(i / (width / 4))."""
    quarter = width // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # (D/4,)
    coords = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")  # (grid, grid) each

    def embed(pos: torch.Tensor) -> torch.Tensor:  # (T,) -> (T, D/2)
        angles = pos.flatten()[:, None] * omega[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([embed(cols), embed(rows)], dim=1).float()  # (T, D)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x (B, T, D) * (1 + scale) + shift, with shift and scale (B, D) per sample."""
    return x * (1 + scale[:, None]) + shift[:, None]


class TimestepEmbedder(nn.Module):
    """t (B,) in [0, 1] -> sinusoidal features -> Linear -> SiLU -> Linear: (B, D)."""

    def __init__(self, width: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(TIME_FREQUENCIES, width), nn.SiLU(),
                                 nn.Linear(width, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        # the sinusoids are computed in fp32 (see timestep_embedding); the MLP runs in the
        # weights' dtype, so a float64 or bfloat16 DiT takes them
        features = timestep_embedding(t, TIME_FREQUENCIES)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class DiTBlock(nn.Module):
    """Pre-norm transformer block whose LayerNorms are shifted and scaled, and whose residual
    branches are gated, by the conditioning vector (adaLN-Zero): (B, T, D), (B, D) -> (B, T, D).

    With `context_width` (text conditioning) a residual cross-attention to the prompt tokens
    sits between self-attention and MLP (PixArt-alpha); it is not modulated, its LayerNorm is a
    plain one and its output projection starts at zero, so the block starts as without it.
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float, context_width: int | None = None):
        super().__init__()
        # no affine parameters: the modulation supplies the per-sample scale and shift
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = MLP(width, mlp_ratio)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        if context_width is not None:  # only then: a class-conditional block's keys are unchanged
            self.norm_cross = nn.LayerNorm(width, eps=1e-6)
            self.cross = CrossAttention(width, context_width, heads)

    def forward(self, x: torch.Tensor, c: torch.Tensor,
                context: TextContext | None = None) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c).chunk(6, dim=1)  # (B, D)
        h, _ = self.attn(modulate(self.norm1(x), shift1, scale1))
        x = x + gate1[:, None] * h  # (B, T, D)
        if context is not None:
            x = x + self.cross(self.norm_cross(x), context)  # (B, T, D)
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


class FinalLayer(nn.Module):
    """Modulated LayerNorm -> Linear to the patch features: (B, T, D), (B, D) -> (B, T, p*p*C)."""

    def __init__(self, width: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(width, patch_size * patch_size * out_channels)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DiT(nn.Module):
    """Diffusion transformer: (x_t (B, C, H, W), t (B,), cond) -> (B, C, H, W), cond being (B,)
    labels, (B, L) prompt ids or None. What the output means (velocity, noise) is the objective's
    business. At initialisation the output is exactly zero.

    Args:
        cfg: the architecture.
        in_channels: C, the latent channels (from the data).
        input_size: H = W, the side of the (square) latent (from the data).
        num_classes: classes of the conditioning labels; 0 = unconditional. The class table has
            num_classes + 1 entries, the last (index num_classes) being the null class of
            classifier-free guidance.
        text: a prompt encoder (`latentlab.nn.text.TextEncoder` interface), making the model
            text-conditioned; a submodule, so it trains and saves with the model. Excludes
            num_classes > 0.
    """

    def __init__(self, cfg: DiTConfig, in_channels: int, input_size: int, num_classes: int = 0,
                 text: nn.Module | None = None):
        super().__init__()
        if min(in_channels, input_size) < 1 or num_classes < 0:
            raise ValueError(f"in_channels, input_size, num_classes: need >= 1, >= 1, >= 0, got "
                             f"{in_channels}, {input_size}, {num_classes}")
        if text is not None and num_classes:
            raise ValueError(f"text, num_classes: a model is conditioned on text or on classes, "
                             f"got both (num_classes={num_classes})")
        if input_size % cfg.patch_size:
            raise ValueError(f"patch_size: must divide the latent's side {input_size}, got "
                             f"{cfg.patch_size}")
        self.cfg, self.in_channels, self.input_size = cfg, in_channels, input_size
        self.num_classes, self.grid = num_classes, input_size // cfg.patch_size
        d, p = cfg.width, cfg.patch_size
        # a stride-p conv is a linear map of each patch (same as Linear on patchify(x))
        self.patch_embed = nn.Conv2d(in_channels, d, p, stride=p)
        self.register_buffer("pos_embed", sincos_pos_embed_2d(d, self.grid)[None],
                             persistent=False)  # (1, T, D), fixed: rebuilt from the config
        self.time_embed = TimestepEmbedder(d)
        self.text = text
        if text is None:
            self.class_embed = nn.Embedding(num_classes + 1, d)
        else:  # the pooled prompt in the class embedding's place (its bias the learned offset)
            self.text_embed = nn.Sequential(nn.Linear(text.width, d), nn.SiLU(), nn.Linear(d, d))
        context_width = None if text is None else text.width
        self.blocks = nn.ModuleList(DiTBlock(d, cfg.heads, cfg.mlp_ratio, context_width)
                                    for _ in range(cfg.depth))
        self.final = FinalLayer(d, p, in_channels)
        self.initialize_weights()

    @property
    def null_class(self) -> int | torch.Tensor | None:
        """The null condition of classifier-free guidance: the label index of "no class" (an
        int), the null prompt's (L,) ids for a text-conditioned model, or None if unconditional
        (its one class-table entry is then a learned bias, used whenever cond is None)."""
        if self.text is not None:
            return self.text.null_ids
        return self.num_classes if self.num_classes else None

    @property
    def num_parameters(self) -> int:
        """Trainable parameters (the fixed positional embedding is a buffer, not counted)."""
        return num_parameters(self)

    def initialize_weights(self) -> None:
        """Every initialisation decision of the model (DiT's choices)."""
        def xavier(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

        for child in self.children():  # the text encoder keeps its own initialisation
            if child is not self.text:
                child.apply(xavier)
        # the patch conv as the linear map it is: xavier over (D, C * p * p)
        nn.init.xavier_uniform_(self.patch_embed.weight.view(self.cfg.width, -1))
        nn.init.zeros_(self.patch_embed.bias)
        if self.text is None:
            nn.init.normal_(self.class_embed.weight, std=0.02)
        embedders = [self.time_embed.mlp] + ([self.text_embed] if self.text is not None else [])
        for mlp in embedders:
            for layer in (mlp[0], mlp[2]):
                nn.init.normal_(layer.weight, std=0.02)
        # adaLN-Zero: zero modulation makes every gate 0, so each block starts as the identity;
        # likewise a zero cross-attention output (PixArt-alpha zero-initialises it too)
        for block in self.blocks:
            zeroed = [block.modulation[-1]] + ([block.cross.proj] if self.text is not None else [])
            for layer in zeroed:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        # zero final layer: the output starts at exactly 0 (DiT)
        for layer in (self.final.modulation[-1], self.final.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def condition(self, t: torch.Tensor, cond: torch.Tensor | None
                  ) -> tuple[torch.Tensor, TextContext | None]:
        """The conditioning vector (B, D): timestep embedding + class (or pooled prompt)
        embedding, `cond` None meaning the null class (null prompt) for every sample; and the
        encoded prompts the blocks cross-attend to (None without text)."""
        if self.text is not None:
            ids = self.text.null(t.shape[0]).to(t.device) if cond is None else cond
            assert ids.shape == (t.shape[0], self.text.max_len), (
                f"cond must be (B, {self.text.max_len}) prompt ids, got {tuple(ids.shape)}")
            context = self.text(ids)  # encoded once, shared by every block
            pooled = self.text_embed(context.pooled.to(self.text_embed[0].weight.dtype))
            return self.time_embed(t) + pooled, context
        if cond is None:
            cond = torch.full(t.shape, self.num_classes, dtype=torch.long, device=t.device)
        elif self.num_classes == 0:
            raise ValueError("cond: the model is unconditional (num_classes=0), pass None")
        else:
            assert cond.shape == t.shape, f"cond must be (B,), got {tuple(cond.shape)}"
        return self.time_embed(t) + self.class_embed(cond), None

    def embed_patches(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, T, D): the patch conv as the matmul it is. Under bf16 on a CPU
        oneDNN has no kernel for this strided conv and torch falls back to a slow one (its
        backward took more time than all the attention, by torch.profiler); a Linear over the
        patches, in the conv weight's own (c, p, q) order, computes the same map."""
        p = self.cfg.patch_size
        patches = rearrange(x, "b c (h p) (w q) -> b (h w) (c p q)", p=p, q=p)
        return F.linear(patches, self.patch_embed.weight.flatten(1), self.patch_embed.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor,
                cond: torch.Tensor | None = None) -> torch.Tensor:
        """Predict from the noisy latent (what the prediction means is the objective's choice).

        Args:
            x: (B, C, H, W), the noisy latent x_t (any memory format).
            t: (B,) float times in [0, 1] (data at 0, noise at 1).
            cond: (B,) int64 labels in [0, num_classes], num_classes being the null class, or
                for a text model (B, L) int64 prompt ids; None = null class (prompt) for all.

        Returns:
            (B, C, H, W), contiguous.
        """
        c, s = self.in_channels, self.input_size
        assert x.shape[1:] == (c, s, s), f"x must be (B, {c}, {s}, {s}), got {tuple(x.shape)}"
        assert t.shape == (x.shape[0],), f"t must be (B,), got {tuple(t.shape)}"
        tokens = self.embed_patches(x) + self.pos_embed.to(x.dtype)  # (B, T, D)
        c, context = self.condition(t, cond)  # (B, D), prompts or None
        for block in self.blocks:
            tokens = block(tokens, c, context)  # (B, T, D)
        out = self.final(tokens, c)  # (B, T, p * p * C)
        return unpatchify(out, self.cfg.patch_size, self.grid)  # (B, C, H, W)
