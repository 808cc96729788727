"""Masked generative transformer (MaskGIT, Chang et al. 2022) over token indices: a bidirectional
transformer trained to predict masked tokens under a cosine masking schedule, sampled by
iterative parallel decoding.

Training (MaskGIT section 3.1): draw u ~ U(0, 1) per item, mask ceil(N cos(pi/2 u)) of its N
tokens (at least one) at random positions by replacing them with the [MASK] token (index V of
the embedding table), and score the cross-entropy of the masked positions only.

Decoding (section 3.2): start from an all-masked grid; at step s = 0 .. S-1 draw a token at
every masked position (temperature; 0 = argmax), keep the most confident ones and mask the
others again, so that floor(N cos(pi/2 (s+1)/S)) stay masked (`masked_counts`; at least one
token is decided per step, so S is at most N and the last step decides all). The confidence of
a drawn token is its log-probability plus Gumbel noise scaled by `choice_temperature`, annealed
linearly to zero over the steps (the official code's `mask_by_random_topk`); tokens decided in
an earlier step are never masked again.

The stream fed to the transformer is [prompt (text models), class token, x_0 .. x_{N-1}], as
the autoregressive prior's (generators/autoregressive.py): the class token is the null class of
an unconditional model, a text model's prompt is its encoder's tokens projected to width, with
padding masked out as keys. Every position sees every other (no causal mask). MaskGIT has no
exact likelihood: its held-out figure is the cross-entropy of masked tokens, not bits per token.

Legend: B batch, N tokens per image (seq_len), V vocabulary, D width, L prompt tokens, S steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from latentlab.generators.autoregressive import TokenTransformer, pick_token
from latentlab.generators.guidance import null_like
from latentlab.nn.transformer import MLP, SelfAttention


@dataclass
class MaskGITConfig:
    kind: Literal["maskgit"] = "maskgit"
    """A bidirectional transformer over token indices, decoded in parallel (MaskGIT). Its
    decoding steps are the generator's `steps` (`sample --steps`), at most one per token."""
    width: int = 128
    """D, the token width."""
    depth: int = 4
    """Transformer blocks."""
    heads: int = 4
    """Attention heads; must divide width."""
    mlp_ratio: float = 4.0
    """MLP hidden width = int(width * mlp_ratio)."""
    dropout: float = 0.0
    """Dropout on embeddings, attention probabilities and residual branches (training only)."""
    temperature: float = 1.0
    """Sampling temperature of the tokens drawn at masked positions; 0 = argmax."""
    choice_temperature: float = 4.5
    """Scale of the Gumbel noise on the confidences that choose which drawn tokens stay,
    annealed linearly to 0 over the steps (MaskGIT's choice_temperature, 4.5 on ImageNet);
    0 keeps exactly the most probable ones."""

    def __post_init__(self):
        for name in ("width", "depth", "heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.width % self.heads:
            raise ValueError(f"heads: must divide width {self.width}, got {self.heads}")
        if not self.mlp_ratio > 0:
            raise ValueError(f"mlp_ratio: must be > 0, got {self.mlp_ratio}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout: must be in [0, 1), got {self.dropout}")
        for name in ("temperature", "choice_temperature"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")


# ------------------------------------------------------------------ the schedule


def mask_counts(u: torch.Tensor, n: int) -> torch.Tensor:
    """Tokens to mask in training at schedule times u (B,) in [0, 1]: ceil(n cos(pi/2 u)),
    clamped to [1, n] (at least one masked, so every item is scored). (B,) int64."""
    ratio = torch.cos(math.pi / 2 * u.double())  # fp64: n * ratio must not round past an integer
    return torch.ceil(n * ratio).long().clamp(1, n)


def random_mask(b: int, n: int, device: torch.device | str = "cpu",
                generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, N) bool, True at masked positions: per item u ~ U(0, 1), `mask_counts(u)` positions
    chosen uniformly at random."""
    count = mask_counts(torch.rand(b, generator=generator, device=device), n)  # (B,)
    scores = torch.rand(b, n, generator=generator, device=device)
    rank = scores.argsort(dim=1).argsort(dim=1)  # (B, N) each position's rank, a permutation
    return rank < count[:, None]


def masked_counts(n: int, steps: int) -> list[int]:
    """Tokens still masked after each decoding step: floor(n cos(pi/2 (s+1)/S)) for s = 0 ..
    S-1 with S = min(steps, n), lowered where needed so that each step decides at least one
    token (MaskGIT's clamp); strictly decreasing to 0."""
    if steps < 1 or n < 1:
        raise ValueError(f"steps, n: need >= 1, got {steps}, {n}")
    steps = min(steps, n)
    counts, left = [], n
    for s in range(steps):
        # cos(pi/2 x) >= 1 - x on [0, 1], so this stays >= steps - 1 - s: no step is left empty
        left = min(left - 1, math.floor(n * math.cos(math.pi / 2 * (s + 1) / steps)))
        counts.append(left if s < steps - 1 else 0)
    return counts


def gumbel(shape: tuple[int, ...], device: torch.device,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard Gumbel noise, float32."""
    u = torch.rand(shape, generator=generator, device=device).clamp_min(1e-20)
    return -torch.log(-torch.log(u))


# ------------------------------------------------------------------ the network


class Block(nn.Module):
    """Pre-norm bidirectional transformer block: x + attn(ln(x)), then x + mlp(ln(x)):
    (B, T, D) -> (B, T, D); `keys` (B, T) bool hides prompt padding."""

    def __init__(self, cfg: MaskGITConfig):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(cfg.width), nn.LayerNorm(cfg.width)
        self.attn = SelfAttention(cfg.width, cfg.heads, cfg.dropout)
        self.mlp = MLP(cfg.width, cfg.mlp_ratio, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), keys=keys)[0])
        return x + self.mlp(self.norm2(x))


class MaskGITTransformer(TokenTransformer):
    """Bidirectional transformer over partly masked token grids: (indices (B, N) with [MASK] =
    V at masked positions, cond) -> logits (B, N, V) of every position's token.

    Args:
        cfg: the architecture and the decoding temperatures.
        vocab_size: V, the codebook size; the embedding table has V + 1 rows, the last being
            the [MASK] token (`mask_id`).
        seq_len: N, tokens per image (h * w of the token grid, raster order).
        num_classes: classes of the conditioning labels; 0 = unconditional. Index num_classes
            is the null class of classifier-free guidance.
        text: a prompt encoder (`latentlab.nn.text.TextEncoder` interface) whose encoded prompt
            prefixes the stream; excludes num_classes > 0.
    """

    def __init__(self, cfg: MaskGITConfig, vocab_size: int, seq_len: int, num_classes: int = 0,
                 text: nn.Module | None = None):
        super().__init__()
        if min(vocab_size, seq_len) < 1 or num_classes < 0:
            raise ValueError(f"vocab_size, seq_len, num_classes: need >= 1, >= 1, >= 0, got "
                             f"{vocab_size}, {seq_len}, {num_classes}")
        if text is not None and num_classes:
            raise ValueError(f"text, num_classes: a model is conditioned on text or on classes, "
                             f"got both (num_classes={num_classes})")
        self.cfg, self.vocab_size, self.seq_len = cfg, vocab_size, seq_len
        self.num_classes = num_classes
        self.token_embed = nn.Embedding(vocab_size + 1, cfg.width)  # row V: [MASK]
        self.class_embed = nn.Embedding(num_classes + 1, cfg.width)
        self.text = text
        if text is not None:
            self.prompt_embed = nn.Linear(text.width, cfg.width)
        self.pos_embed = nn.Parameter(torch.zeros(1, seq_len + 1, cfg.width))  # class, tokens
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width)
        self.head = nn.Linear(cfg.width, vocab_size)
        self.initialize_weights()

    @property
    def mask_id(self) -> int:
        """The index of the [MASK] token (V)."""
        return self.vocab_size

    def _embed(self, indices: torch.Tensor,
               cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The stream [prompt, class token, tokens] (B, L + 1 + N, D) and which positions are
        visible keys (B, L + 1 + N) bool (None without a prompt)."""
        label = cond if self.text is None else torch.zeros_like(cond[:, 0])  # the one class
        x = torch.cat([self.class_embed(label)[:, None], self.token_embed(indices)], dim=1)
        x = x + self.pos_embed  # (B, 1 + N, D)
        if self.text is None:
            return self.drop(x), None
        context = self.text(cond)
        prompt = self.prompt_embed(context.tokens.to(self.prompt_embed.weight.dtype))
        keys = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        return self.drop(torch.cat([prompt, x], 1)), torch.cat([context.mask, keys], 1)

    def forward(self, indices: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of every position's token.

        Args:
            indices: (B, N) int64 in [0, V], V (`mask_id`) at masked positions.
            cond: (B,) labels in [0, num_classes] (num_classes: the null class), (B, L) prompt
                ids of a text model, or None (the null condition for all).

        Returns:
            (B, N, V) logits in the network's dtype; those at unmasked positions are returned
            too but were never trained.
        """
        assert indices.shape[1:] == (self.seq_len,), (
            f"indices must be (B, {self.seq_len}), got {tuple(indices.shape)}")
        cond = self._check_cond(cond, indices.shape[0], indices.device)
        x, keys = self._embed(indices, cond)
        for block in self.blocks:
            x = block(x, keys)
        return self.head(self.norm(x[:, self.prompt_len + 1:]))  # (B, N, V)

    def logits(self, indices: torch.Tensor, cond: torch.Tensor | None = None,
               guidance: float | None = None) -> torch.Tensor:
        """(B, N, V) float32 logits, with classifier-free guidance on logits when `guidance`
        is given: uncond + scale * (cond - uncond) in one doubled batch (generators/guidance.py's
        convention)."""
        if guidance is None:
            return self(indices, cond).float()
        if cond is None:
            raise ValueError(f"guidance: classifier-free guidance (scale {guidance}) needs "
                             "class labels or prompts, got cond=None")
        both = torch.cat([cond, null_like(cond, self.null_class)])
        cond_logits, uncond_logits = self(torch.cat([indices, indices]), both).float().chunk(2)
        return uncond_logits + guidance * (cond_logits - uncond_logits)

    @torch.no_grad()
    def sample(self, n: int, cond: torch.Tensor | None = None, steps: int = 8,
               temperature: float | None = None, choice_temperature: float | None = None,
               guidance: float | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw n token grids by iterative parallel decoding. Call `.eval()` first if dropout > 0.

        Args:
            n: grids to draw.
            cond: (n,) labels, (n, L) prompt ids, or None (null condition).
            steps: decoding steps S (more than N act as N: one token per step).
            temperature, choice_temperature: None = the config's.
            guidance: classifier-free guidance scale (needs cond); None = none.
            generator: source of randomness; same generator state, same samples.

        Returns:
            (n, N) int64 tokens, none of them [MASK].
        """
        temperature = self.cfg.temperature if temperature is None else temperature
        tau = self.cfg.choice_temperature if choice_temperature is None else choice_temperature
        if temperature < 0 or tau < 0:
            raise ValueError(f"temperature, choice_temperature: must be >= 0, got "
                             f"{temperature}, {tau}")
        device = cond.device if cond is not None else self.pos_embed.device
        tokens = torch.full((n, self.seq_len), self.mask_id, dtype=torch.long, device=device)
        counts = masked_counts(self.seq_len, steps)
        for s, left in enumerate(counts):
            logits = self.logits(tokens, cond, guidance)  # (n, N, V) fp32
            masked = tokens == self.mask_id  # (n, N)
            drawn = pick_token(logits.flatten(0, 1), temperature,
                               generator=generator).view(n, -1)  # (n, N)
            confidence = logits.log_softmax(-1).gather(-1, drawn[..., None]).squeeze(-1)
            noise = tau * (1 - (s + 1) / len(counts))  # annealed to 0 at the last step
            if noise > 0:
                confidence = confidence + noise * gumbel(confidence.shape, device, generator)
            confidence = confidence.masked_fill(~masked, math.inf)  # decided tokens stay
            tokens = torch.where(masked, drawn, tokens)
            if left:  # the least confident drawn tokens are masked again
                remask = confidence.topk(left, dim=1, largest=False).indices  # (n, left)
                tokens = tokens.scatter(1, remask, self.mask_id)
        return tokens


# ------------------------------------------------------------------ the loss


@dataclass(frozen=True)
class MaskedLoss:
    """The masked-token cross-entropy of a batch.

    Attributes:
        loss: scalar, mean cross-entropy (nats) over every masked token of the batch.
        per_item: (B,) summed cross-entropy of each item's masked tokens.
        masked: (B,) int64, masked tokens per item.
    """

    loss: torch.Tensor
    per_item: torch.Tensor
    masked: torch.Tensor


def masked_loss(model: MaskGITTransformer, tokens: torch.Tensor, cond: torch.Tensor | None,
                generator: torch.Generator | None = None) -> MaskedLoss:
    """Mask `tokens` (B, N) by the cosine schedule (`random_mask`) and score the model's
    cross-entropy at the masked positions only (MaskGIT eq. 1)."""
    b, n = tokens.shape
    mask = random_mask(b, n, tokens.device, generator)  # (B, N)
    logits = model(tokens.masked_fill(mask, model.mask_id), cond)  # (B, N, V)
    ce = F.cross_entropy(logits.float().flatten(0, 1), tokens.flatten(), reduction="none")
    per_item = (ce.view(b, n) * mask).sum(1)  # (B,)
    masked = mask.sum(1)
    return MaskedLoss(per_item.sum() / masked.sum(), per_item, masked)
