"""Gated PixelCNN prior over a grid of categorical tokens in raster order (van den Oord et al.
2016, "Conditional Image Generation with PixelCNN Decoders"): the prior VQ-VAE trains on its
codes, and a model of quantised pixels.

Two stacks remove the blind spot of the original masked PixelCNN (section 2.2): the vertical
stack sees every row above (a (k//2 + 1, k) convolution over rows i - k//2 .. i, reaching the
horizontal stack only shifted down by one row), the horizontal stack the tokens left of the
current one in its row (a (1, k//2 + 1) convolution; in the first layer masked type A, without
the current token; type B, with it, after). Each layer is a gated unit tanh(a) * sigmoid(b)
(section 2.3) with a per-layer conditioning bias (section 2.3, "V^T h"): the embedding of a
class label, or of a prompt pooled by latentlab's text encoder, projected to every layer.
The horizontal stack has residual connections and every layer a skip connection to the head
(as in the paper's figure 2 and WaveNet).

So logits[:, i, j] depend only on tokens before (i, j) in raster order: the likelihood
log p(x) = sum_i log p(x_i | x_<i, cond) is exact, for bits/dim and the codec.

Quantised pixels (a run without a tokenizer): each pixel of C channels at `levels` levels per
channel is one token of levels ** C values (channel 0 most significant), not C tokens in an
R -> G -> B order. For the few levels this prior is used with (17 grey levels of digits, 4
per channel of shapes: 64 tokens) the joint token is exact and keeps one mask for every layer;
PixelCNN's channel masks pay off only for 256 levels, where levels ** 3 is too large.

Legend: B batch, H W token grid, N = H * W positions, V vocabulary, D channels, E cond width,
C pixel channels, L prompt tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from latentlab import pixels
from latentlab.generators.autoregressive import pick_token
from latentlab.generators.guidance import null_like
from latentlab.nn import num_parameters

MAX_PIXEL_VOCAB = 4096
"""Largest joint pixel vocabulary levels ** C (one softmax over it per pixel)."""


@dataclass
class PixelCNNConfig:
    kind: Literal["pixelcnn"] = "pixelcnn"
    """A gated PixelCNN over token grids in raster order."""
    channels: int = 64
    """D, the feature channels of both stacks."""
    layers: int = 6
    """Gated layers (the first masked type A, the rest type B)."""
    kernel_size: int = 3
    """k, odd and >= 3: the vertical stack's kernel is (k//2 + 1, k), the horizontal's
    (1, k//2 + 1)."""
    levels: int = 16
    """Levels per colour channel when the run models pixels directly (no tokenizer); each pixel
    is one token of levels ** C values. Not used over a tokenizer's token grid."""

    def __post_init__(self):
        for name in ("channels", "layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.kernel_size < 3 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size: must be odd and >= 3 (no blind spot), got "
                             f"{self.kernel_size}")
        if self.levels < 2:
            raise ValueError(f"levels: must be >= 2, got {self.levels}")


def pixels_to_tokens(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Images (B, C, H, W) in [-1, 1] -> (B, H, W) int64 joint tokens in [0, levels ** C)."""
    q = ((x.float() - pixels.LOW) * ((levels - 1) / pixels.DATA_RANGE)).round()
    q = q.clamp(0, levels - 1).long()  # (B, C, H, W)
    place = levels ** torch.arange(x.shape[1] - 1, -1, -1, device=x.device)  # (C,)
    return (q * place[:, None, None]).sum(1)


def tokens_to_pixels(tokens: torch.Tensor, levels: int, channels: int) -> torch.Tensor:
    """(B, H, W) joint tokens -> images (B, C, H, W) float32 in [-1, 1], the level centres."""
    place = levels ** torch.arange(channels - 1, -1, -1, device=tokens.device)  # (C,)
    q = (tokens[:, None] // place[:, None, None]) % levels  # (B, C, H, W)
    return q.float() * (pixels.DATA_RANGE / (levels - 1)) + pixels.LOW


def down_shift(x: torch.Tensor) -> torch.Tensor:
    """(B, D, H, W) moved down one row (row 0 zero): row i then holds row i - 1."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


class GatedLayer(nn.Module):
    """One gated layer of both stacks: (v, h, cond bias) -> (v, h, skip), each (B, D, H, W).

    v at row i depends on the input's rows <= i; h at (i, j) on the tokens left of j in row i
    (and j itself when `first` is False, its input already excluding it) and, through the
    down-shifted link, on v of rows < i.
    """

    def __init__(self, d: int, k: int, first: bool):
        super().__init__()
        self.k, self.first = k, first
        self.v_conv = nn.Conv2d(d, 2 * d, (k // 2 + 1, k))
        self.h_conv = nn.Conv2d(d, 2 * d, (1, k // 2 + 1))
        self.link = nn.Conv2d(2 * d, 2 * d, 1)  # vertical pre-activations into the horizontal
        self.h_out, self.skip = nn.Conv2d(d, d, 1), nn.Conv2d(d, d, 1)
        if first:  # mask type A: the horizontal kernel's last tap is the current token
            mask = torch.ones_like(self.h_conv.weight)
            mask[..., -1] = 0
            self.register_buffer("mask", mask, persistent=False)

    def forward(self, v: torch.Tensor, h: torch.Tensor, bias: torch.Tensor):
        r = self.k // 2
        v_pre = self.v_conv(F.pad(v, (r, r, r, 0)))  # (B, 2D, H, W), rows i - r .. i
        weight = self.h_conv.weight * self.mask if self.first else self.h_conv.weight
        h_pre = F.conv2d(F.pad(h, (r, 0, 0, 0)), weight, self.h_conv.bias)  # cols j - r .. j
        h_pre = h_pre + self.link(down_shift(v_pre))
        v_new = gate(v_pre + bias)
        gated = gate(h_pre + bias)  # (B, D, H, W)
        # no residual in the first layer: its input holds the current token itself
        h_new = self.h_out(gated) if self.first else h + self.h_out(gated)
        return v_new, h_new, self.skip(gated)


def gate(x: torch.Tensor) -> torch.Tensor:
    """Gated activation unit tanh(a) * sigmoid(b) (section 2.3): (B, 2D, ...) -> (B, D, ...)."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class PixelCNN(nn.Module):
    """Gated PixelCNN prior: (indices (B, N) or (B, H, W), cond) -> logits (B, N, V), cond
    being (B,) labels, (B, L) prompt ids or None. The same interface as `ARTransformer`
    (forward, log_prob, next_token_logits, sample), so the codec and evaluation take either.

    Args:
        cfg: the architecture.
        vocab_size: V, the token values (codebook size, or levels ** C for pixels).
        grid: (H, W), the token grid.
        num_classes: classes of the labels; 0 = unconditional. The class table has
            num_classes + 1 entries, the last being the null class of classifier-free guidance
            (an unconditional model feeds its one entry, a learned constant bias).
        text: a prompt encoder (`latentlab.nn.text.TextEncoder` interface) whose pooled
            encoding is the conditioning vector; excludes num_classes > 0.
        context: the vocabulary of a token grid of half the sides this one is conditioned on
            (VQ-VAE-2's bottom prior given the top codes, `generators.hierarchical`): embedded,
            upsampled and convolved into a spatial bias of every layer (the paper's section
            2.3, V * s(h)); 0: none.
    """

    def __init__(self, cfg: PixelCNNConfig, vocab_size: int, grid: tuple[int, int],
                 num_classes: int = 0, text: nn.Module | None = None, context: int = 0):
        super().__init__()
        if vocab_size < 1 or min(grid) < 1 or num_classes < 0 or len(grid) != 2:
            raise ValueError(f"vocab_size, grid, num_classes: need >= 1, (H, W) >= 1, >= 0, "
                             f"got {vocab_size}, {tuple(grid)}, {num_classes}")
        if text is not None and num_classes:
            raise ValueError(f"text, num_classes: a model is conditioned on text or on classes, "
                             f"got both (num_classes={num_classes})")
        d = cfg.channels
        self.cfg, self.vocab_size, self.num_classes = cfg, vocab_size, num_classes
        self.grid, self.seq_len = (int(grid[0]), int(grid[1])), int(grid[0] * grid[1])
        self.token_embed = nn.Embedding(vocab_size, d)
        self.text = text
        if text is not None:
            self.cond_embed = nn.Linear(text.width, d)
        else:
            self.class_embed = nn.Embedding(num_classes + 1, d)
        self.cond_bias = nn.Linear(d, 2 * d * cfg.layers)  # V^T h of every layer at once
        self.context = context
        if context:
            if grid[0] % 2 or grid[1] % 2:
                raise ValueError(f"grid: a context grid has half the sides, {tuple(grid)} are "
                                 "not even")
            self.context_embed = nn.Embedding(context, d)
            self.context_conv = nn.Conv2d(d, 2 * d * cfg.layers, 3, padding=1)
        self.layers = nn.ModuleList(GatedLayer(d, cfg.kernel_size, i == 0)
                                    for i in range(cfg.layers))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(d, d, 1), nn.ReLU(),
                                  nn.Conv2d(d, vocab_size, 1))
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Every initialisation decision (the text encoder keeps its own): token and class
        embeddings N(0, 1), so the convolutions and the conditioning bias see unit-scale inputs
        from the start (a small or zero conditioning path learns the labels slowly: its weights
        and the embeddings' gradients scale with each other); layers keep torch's defaults."""
        nn.init.normal_(self.token_embed.weight, std=1.0)
        if self.context:
            nn.init.normal_(self.context_embed.weight, std=1.0)
        if self.text is None:
            nn.init.normal_(self.class_embed.weight, std=1.0)

    @property
    def null_class(self) -> int | torch.Tensor | None:
        """The null condition of classifier-free guidance: the null label (an int), the null
        prompt's (L,) ids, or None if unconditional."""
        if self.text is not None:
            return self.text.null_ids
        return self.num_classes if self.num_classes else None

    @property
    def num_parameters(self) -> int:
        return num_parameters(self)

    def _cond_vector(self, cond: torch.Tensor | None, batch: int,
                     device: torch.device) -> torch.Tensor:
        """(B, D): the embedded label or pooled prompt; None is the null class / prompt."""
        if self.text is not None:
            if cond is None:
                cond = self.text.null(batch).to(device)
            assert cond.shape == (batch, self.text.max_len), (
                f"cond must be ({batch}, {self.text.max_len}) prompt ids, got "
                f"{tuple(cond.shape)}")
            pooled = self.text(cond).pooled
            return self.cond_embed(pooled.to(self.cond_embed.weight.dtype))
        if cond is None:
            cond = torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        elif self.num_classes == 0:
            raise ValueError("cond: the model is unconditional (num_classes=0), pass None")
        assert cond.shape == (batch,), f"cond must be ({batch},), got {tuple(cond.shape)}"
        return self.class_embed(cond)

    def forward(self, indices: torch.Tensor, cond: torch.Tensor | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits: (B, N) or (B, H, W) int64 tokens -> (B, N, V), logits[:, n]
        predicting token n (raster order) from the condition, the context grid (B, H/2 * W/2)
        of a model built with one, and the tokens before it."""
        b = indices.shape[0]
        assert indices[0].numel() == self.seq_len, (
            f"indices must be (B, {self.seq_len}) or (B, {self.grid[0]}, {self.grid[1]}), "
            f"got {tuple(indices.shape)}")
        x = self.token_embed(indices.reshape(b, *self.grid))  # (B, H, W, D)
        x = rearrange(x, "b h w d -> b d h w")
        biases = self.cond_bias(self._cond_vector(cond, b, indices.device))  # (B, 2D * layers)
        biases = rearrange(biases, "b (n e) -> n b e 1 1", n=len(self.layers))
        if self.context:
            biases = biases + self._context_biases(context, b)
        v, h, skips = x, x, 0
        for layer, bias in zip(self.layers, biases, strict=True):
            v, h, skip = layer(v, h, bias)
            skips = skips + skip
        return rearrange(self.head(skips), "b v h w -> b (h w) v")

    def _context_biases(self, context: torch.Tensor | None, b: int) -> torch.Tensor:
        """(B, H/2 * W/2) context tokens -> (layers, B, 2D, H, W) spatial biases."""
        h, w = self.grid[0] // 2, self.grid[1] // 2
        assert context is not None and context[0].numel() == h * w, (
            f"context must be (B, {h * w}) tokens of the {h}x{w} grid this model is "
            f"conditioned on, got {None if context is None else tuple(context.shape)}")
        c = rearrange(self.context_embed(context.reshape(b, h, w)), "b h w d -> b d h w")
        c = self.context_conv(c.repeat_interleave(2, -2).repeat_interleave(2, -1))
        return rearrange(c, "b (n e) h w -> n b e h w", n=len(self.layers))

    def log_prob(self, indices: torch.Tensor, cond: torch.Tensor | None = None,
                 context: torch.Tensor | None = None) -> torch.Tensor:
        """Per-token log p(x_n | cond, context, x_<n): (B, N) float32, natural log, normalised
        in float32 with autocast off (as `ARTransformer.log_prob`)."""
        logits = self(indices, cond, context)  # (B, N, V)
        flat = indices.reshape(len(indices), -1)
        with torch.autocast(indices.device.type, enabled=False):
            logp = F.log_softmax(logits.float(), dim=-1)
            return logp.gather(-1, flat[..., None]).squeeze(-1)  # (B, N)

    def next_token_logits(self, prefix: torch.Tensor, cond: torch.Tensor | None = None,
                          cache: None = None, guidance: float | None = None,
                          context: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        """Logits (B, V) float32 of token i given the decoded tokens (B, i), i < N: one pass
        over the grid with the positions >= i zero (causal, so they do not matter). `cache` is
        accepted and returned as None (the `ARTransformer` interface); `guidance` as there;
        `context` as in `forward`."""
        b, i = prefix.shape
        if i >= self.seq_len:
            raise ValueError(f"prefix: {i} tokens decoded, the grid has only {self.seq_len}")
        if guidance is not None and cond is None:
            raise ValueError(f"guidance: classifier-free guidance (scale {guidance}) needs "
                             "class labels or prompts, got cond=None")
        full = F.pad(prefix, (0, self.seq_len - i))  # (B, N)
        if guidance is not None:  # one batched pass: conditional rows, then unconditional ones
            cond = torch.cat([cond, null_like(cond, self.null_class)])
            full = torch.cat([full, full])
            context = torch.cat([context, context]) if context is not None else None
        logits = self(full, cond, context)[:, i].float()  # (B', V)
        if guidance is not None:
            cond_logits, uncond_logits = logits.chunk(2)
            logits = uncond_logits + guidance * (cond_logits - uncond_logits)
        return logits, None

    @torch.no_grad()
    def sample(self, n: int, cond: torch.Tensor | None = None, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None,
               guidance: float | None = None, generator: torch.Generator | None = None,
               context: torch.Tensor | None = None) -> torch.Tensor:
        """Draw n grids in raster order, one forward pass per position: (n, N) int64. The
        arguments are `ARTransformer.sample`'s (temperature 0 = greedy); `context` as in
        `forward`."""
        if temperature < 0:
            raise ValueError(f"temperature: must be >= 0, got {temperature}")
        device = cond.device if cond is not None else self.token_embed.weight.device
        tokens = torch.zeros(n, self.seq_len, dtype=torch.long, device=device)
        for i in range(self.seq_len):
            logits, _ = self.next_token_logits(tokens[:, :i], cond, None, guidance,
                                               context)  # (n, V)
            tokens[:, i] = pick_token(logits, temperature, top_k, top_p, generator)
        return tokens
