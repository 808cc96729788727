"""Autoregressive transformer prior over token indices in raster order: a decoder-only GPT
(after karpathy/nanoGPT `model.py`) with a class token as prefix, a KV cache, temperature /
top-k / top-p sampling, classifier-free guidance on logits, and exact per-token
log-probabilities for the codec.

The sequence fed to the transformer is [class token, x_0, ..., x_{N-2}]; the output at position
i is the distribution of image token x_i, so x_0 is predicted from the class token alone. An
unconditional model always feeds the null class (its start token).

Legend: B batch, N tokens per image (seq_len), T positions fed now, P positions cached,
V vocabulary, D width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from latentlab.nn import num_parameters
from latentlab.nn.transformer import KV, MLP, SelfAttention


@dataclass
class ARConfig:
    kind: Literal["ar"] = "ar"
    """A decoder-only transformer over token indices in raster order."""
    width: int = 128
    """D, the token width. Plain config, so widths can form a geometric series."""
    depth: int = 4
    """Transformer blocks."""
    heads: int = 4
    """Attention heads; must divide width."""
    mlp_ratio: float = 4.0
    """MLP hidden width = int(width * mlp_ratio)."""
    dropout: float = 0.0
    """Dropout on embeddings, attention probabilities and residual branches (training only)."""

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


@dataclass(frozen=True)
class KVCache:
    """Keys and values of every layer for the first `length` positions of a batch of sequences
    (position 0 is the class token). Immutable: a step returns a new cache, so a caller can keep
    an old one to branch from."""

    layers: tuple[KV, ...]
    """Per layer, keys and values, each (B, heads, length, D / heads)."""

    @property
    def length(self) -> int:
        return self.layers[0][0].shape[2]


class Block(nn.Module):
    """Pre-norm causal transformer block (GPT-2): x + attn(ln(x)), then x + mlp(ln(x)):
    (B, T, D) -> (B, T, D), plus the layer's keys and values."""

    def __init__(self, cfg: ARConfig):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(cfg.width), nn.LayerNorm(cfg.width)
        self.attn = SelfAttention(cfg.width, cfg.heads, cfg.dropout)
        self.mlp = MLP(cfg.width, cfg.mlp_ratio, cfg.dropout)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, past: KV | None = None) -> tuple[torch.Tensor, KV]:
        h, kv = self.attn(self.norm1(x), causal=True, past=past)
        x = x + self.drop(h)
        return x + self.mlp(self.norm2(x)), kv


class ARTransformer(nn.Module):
    """Decoder-only transformer prior: (indices (B, N), cond (B,) | None) -> logits (B, N, V).

    The head is untied from the token embedding and has a bias: the vocabulary is small, so tying
    saves little, and the bias holds the marginal token frequencies directly (the first thing an
    entropy coder needs).

    Args:
        cfg: the architecture.
        vocab_size: V, the number of token indices (codebook size; from the data).
        seq_len: N, tokens per image (h * w of the token grid, raster order; from the data).
        num_classes: classes of the conditioning labels; 0 = unconditional. The class table has
            num_classes + 1 entries, the last (index num_classes) being the null class of
            classifier-free guidance and the start token of unconditional models.
    """

    def __init__(self, cfg: ARConfig, vocab_size: int, seq_len: int, num_classes: int = 0):
        super().__init__()
        if min(vocab_size, seq_len) < 1 or num_classes < 0:
            raise ValueError(f"vocab_size, seq_len, num_classes: need >= 1, >= 1, >= 0, got "
                             f"{vocab_size}, {seq_len}, {num_classes}")
        self.cfg, self.vocab_size, self.seq_len = cfg, vocab_size, seq_len
        self.num_classes = num_classes
        self.token_embed = nn.Embedding(vocab_size, cfg.width)
        self.class_embed = nn.Embedding(num_classes + 1, cfg.width)
        self.pos_embed = nn.Parameter(torch.zeros(1, seq_len, cfg.width))  # (1, N, D)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width)
        self.head = nn.Linear(cfg.width, vocab_size)
        self.initialize_weights()

    @property
    def null_class(self) -> int | None:
        """Label index of "no class" for classifier-free guidance; None if unconditional (the
        start token is then the class table's one entry, used whenever cond is None)."""
        return self.num_classes if self.num_classes else None

    @property
    def num_parameters(self) -> int:
        """Trainable parameters, embeddings included."""
        return num_parameters(self)

    def initialize_weights(self) -> None:
        """Every initialisation decision of the model (GPT-2 / nanoGPT's choices)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.02)
        # residual projections scaled by 1/sqrt(2 depth) so the residual stream's variance does
        # not grow with depth (GPT-2 paper, section 2.3)
        for block in self.blocks:
            for proj in (block.attn.proj, block.mlp.fc2):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * self.cfg.depth))

    def _check_cond(self, cond: torch.Tensor | None, batch: int,
                    device: torch.device) -> torch.Tensor:
        """Labels (B,) int64 with None replaced by the null class."""
        if cond is None:
            return torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        if self.num_classes == 0:
            raise ValueError("cond: the model is unconditional (num_classes=0), pass None")
        assert cond.shape == (batch,), f"cond must be ({batch},), got {tuple(cond.shape)}"
        return cond

    def _embed(self, indices: torch.Tensor, cond: torch.Tensor, start: int) -> torch.Tensor:
        """Embed positions start .. start + T - 1 of [class token, indices...]: (B, T, D).
        `indices` holds the image tokens at those positions (shifted by one: position i > 0 is
        token i - 1), `cond` (B,) labels used only when start == 0."""
        x = self.token_embed(indices)  # (B, T', D)
        if start == 0:
            x = torch.cat([self.class_embed(cond)[:, None], x], dim=1)  # (B, T' + 1, D)
        return self.drop(x + self.pos_embed[:, start:start + x.shape[1]])

    def _transform(self, x: torch.Tensor,
                   cache: KVCache | None) -> tuple[torch.Tensor, KVCache]:
        """Blocks, final norm and head on embedded positions (B, T, D) -> logits (B, T, V)."""
        layers = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, None if cache is None else cache.layers[i])
            layers.append(kv)
        return self.head(self.norm(x)), KVCache(tuple(layers))

    def forward(self, indices: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits.

        Args:
            indices: (B, T) int64 image tokens, T <= seq_len (usually T = seq_len).
            cond: (B,) int64 labels in [0, num_classes], num_classes being the null class;
                None = null class for all.

        Returns:
            (B, T, V) logits; logits[:, i] predicts token i from the class token and tokens < i.
        """
        assert indices.dim() == 2 and 1 <= indices.shape[1] <= self.seq_len, (
            f"indices must be (B, T) with 1 <= T <= {self.seq_len}, "
            f"got {tuple(indices.shape)}")
        cond = self._check_cond(cond, indices.shape[0], indices.device)
        x = self._embed(indices[:, :-1], cond, start=0)  # (B, T, D): class token, tokens < T-1
        logits, _ = self._transform(x, None)
        return logits  # (B, T, V)

    def log_prob(self, indices: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Per-token log-probabilities log p(x_i | class, x_<i): (B, N) float32, natural log.

        The normalisation runs in float32 with autocast off even when the network runs under
        bf16 autocast, so the probabilities sum to 1 to fp32 precision. An entropy coder must
        compute its probabilities along the same path when encoding and decoding (e.g. both
        through `next_token_logits`): the batched and the incremental paths agree only to
        rounding.
        """
        logits = self(indices, cond)  # (B, N, V)
        with torch.autocast(indices.device.type, enabled=False):
            logp = F.log_softmax(logits.float(), dim=-1)
            return logp.gather(-1, indices[..., None]).squeeze(-1)  # (B, N)

    def next_token_logits(
        self,
        prefix: torch.Tensor,
        cond: torch.Tensor | None = None,
        cache: KVCache | None = None,
        guidance: float | None = None,
    ) -> tuple[torch.Tensor, KVCache]:
        """Logits of token i given the decoded tokens < i, incrementally.

        Feeds only the positions not yet in `cache` (one per step when called with the cache of
        the previous step), so decoding N tokens costs N single-position passes.

        Args:
            prefix: (B, i) int64, the tokens decoded so far, 0 <= i < seq_len.
            cond: (B,) labels or None (null class).
            cache: the cache returned by the previous call on the same sequences (holding at
                most i + 1 positions), or None to compute from scratch.
            guidance: classifier-free guidance scale on logits: uncond + scale * (cond - uncond)
                (0 unconditional, 1 conditional; see generators/guidance.py). The cache then
                holds the doubled batch (conditional rows first). None = no guidance.

        Returns:
            Logits (B, V) float32 of token i, and the cache of positions 0..i.
        """
        b, i = prefix.shape
        if i >= self.seq_len:
            raise ValueError(f"prefix: {i} tokens decoded, the sequence has only "
                             f"{self.seq_len}")
        if guidance is not None and cond is None:
            raise ValueError(f"guidance: classifier-free guidance (scale {guidance}) needs "
                             "class labels, got cond=None")
        cond = self._check_cond(cond, b, prefix.device)
        if guidance is not None:  # one batched pass: conditional rows, then unconditional ones
            prefix = torch.cat([prefix, prefix])
            cond = torch.cat([cond, torch.full_like(cond, self.num_classes)])
        done = 0 if cache is None else cache.length
        if not 0 <= done <= i + 1:
            raise ValueError(f"cache: holds {done} positions, more than the {i + 1} of a "
                             f"{i}-token prefix")
        if done == i + 1:  # already computed; recompute the last position from the rest
            cache = KVCache(tuple((k[:, :, :i], v[:, :, :i]) for k, v in cache.layers))
            done = i
        # positions done .. i are the class token (position 0) and tokens done - 1 .. i - 1
        x = self._embed(prefix[:, max(done - 1, 0):], cond, start=done)  # (B', i + 1 - done, D)
        logits, cache = self._transform(x, cache)
        logits = logits[:, -1].float()  # (B', V)
        if guidance is not None:
            cond_logits, uncond_logits = logits.chunk(2)
            logits = uncond_logits + guidance * (cond_logits - uncond_logits)  # (B, V)
        return logits, cache

    @torch.no_grad()
    def sample(
        self,
        n: int,
        cond: torch.Tensor | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        guidance: float | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Draw n token sequences, one token at a time. Call `.eval()` first if dropout > 0.

        Args:
            n: sequences to draw.
            cond: (n,) labels or None (null class).
            temperature: logits are divided by it; 0 = greedy (argmax).
            top_k: sample among the k most likely tokens only.
            top_p: sample from the smallest set of most likely tokens whose probability is at
                least top_p (nucleus sampling, Holtzman et al. 2020).
            guidance: classifier-free guidance scale (needs cond); None = none.
            generator: source of randomness; same generator state, same samples.
            use_cache: feed only the new token each step; False recomputes the whole prefix
                every step (the reference the KV-cache benchmark compares against).

        Returns:
            (n, N) int64 tokens.
        """
        if temperature < 0:
            raise ValueError(f"temperature: must be >= 0, got {temperature}")
        if top_k is not None and not 1 <= top_k <= self.vocab_size:
            raise ValueError(f"top_k: must be in [1, {self.vocab_size}], got {top_k}")
        if top_p is not None and not 0 < top_p <= 1:
            raise ValueError(f"top_p: must be in (0, 1], got {top_p}")
        if guidance is not None and cond is None:
            raise ValueError(f"guidance: classifier-free guidance (scale {guidance}) needs "
                             "class labels, got cond=None")
        device = cond.device if cond is not None else self.pos_embed.device
        tokens = torch.empty(n, 0, dtype=torch.long, device=device)  # (n, i)
        cache = None
        for _ in range(self.seq_len):
            logits, cache = self.next_token_logits(tokens, cond, cache if use_cache else None,
                                                   guidance)  # (n, V) fp32
            nxt = pick_token(logits, temperature, top_k, top_p, generator)  # (n,)
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        return tokens


def pick_token(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token per row of logits (B, V) -> (B,) int64, after temperature, top-k and top-p
    filtering (in that order). Temperature 0 is greedy."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p is not None:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the tokens more likely than it already reach top_p; the most
        # likely token always stays
        drop = probs.cumsum(dim=-1) - probs >= top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), -math.inf)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
