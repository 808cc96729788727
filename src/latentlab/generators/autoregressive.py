"""Autoregressive transformer prior over token indices in raster order: a decoder-only GPT
(after karpathy/nanoGPT `model.py`) with a class token as prefix, a KV cache, temperature /
top-k / top-p sampling, classifier-free guidance on logits, and exact per-token
log-probabilities for the codec.

The sequence fed to the transformer is [class token, x_0, ..., x_{N-2}]; the output at position
i is the distribution of image token x_i, so x_0 is predicted from the class token alone. An
unconditional model always feeds the null class (its start token).

A text-conditioned model (DALL-E style: one causal stream of text, then image) feeds
[c_0, ..., c_{L-1}, start token, x_0, ..., x_{N-2}]: the L prompt tokens as its text encoder
encodes them (its own positions included), projected to width, then the image part of an
unconditional model, whose start token predicts x_0. Padding positions of the prompt are masked
out as keys for every query; the prompt positions' outputs are never scored, so the image
log-likelihood is that of the N image tokens alone. The KV cache holds the prompt once encoded.

Legend: B batch, N tokens per image (seq_len), T positions fed now, P positions cached,
V vocabulary, D width, L prompt tokens, E text width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from latentlab.generators.guidance import null_like
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
    (position 0 is the class token, or the first prompt token). Immutable: a step returns a new
    cache, so a caller can keep an old one to branch from."""

    layers: tuple[KV, ...]
    """Per layer, keys and values, each (B, heads, length, D / heads)."""
    keys: torch.Tensor | None = None
    """(B, length) bool, False at prompt padding (no query sees it); None without a prompt."""

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

    def forward(self, x: torch.Tensor, past: KV | None = None,
                keys: torch.Tensor | None = None) -> tuple[torch.Tensor, KV]:
        h, kv = self.attn(self.norm1(x), causal=True, past=past, keys=keys)
        x = x + self.drop(h)
        return x + self.mlp(self.norm2(x)), kv


class TokenTransformer(nn.Module):
    """What the transformers over token indices share (the autoregressive prior and MaskGIT):
    conditioning by a class table or a text encoder (`text`, `num_classes`), the null condition
    of guidance, and GPT-2's initialisation."""

    text: nn.Module | None
    num_classes: int

    @property
    def null_class(self) -> int | torch.Tensor | None:
        """The null condition of classifier-free guidance: the label index of "no class" (an
        int), the null prompt's (L,) ids for a text-conditioned model, or None if unconditional
        (the class table's one entry then stands for "no condition", used whenever cond is None)."""
        if self.text is not None:
            return self.text.null_ids
        return self.num_classes if self.num_classes else None

    @property
    def prompt_len(self) -> int:
        """L, the stream positions of the prompt before the image part (0 without text)."""
        return 0 if self.text is None else self.text.max_len

    @property
    def num_parameters(self) -> int:
        """Trainable parameters, embeddings included."""
        return num_parameters(self)

    def initialize_weights(self) -> None:
        """Every initialisation decision of the model (GPT-2 / nanoGPT's choices); the text
        encoder keeps its own. Needs `blocks` (with attn.proj, mlp.fc2), `pos_embed` and
        `cfg.depth`."""
        own = set(self.text.modules()) if self.text is not None else set()
        for module in self.modules():
            if module in own:
                continue
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
        """Labels (B,) int64, or prompt ids (B, L) for a text model, with None replaced by the
        null class (the null prompt)."""
        if self.text is not None:
            if cond is None:
                return self.text.null(batch).to(device)
            assert cond.shape == (batch, self.prompt_len), (
                f"cond must be ({batch}, {self.prompt_len}) prompt ids, got {tuple(cond.shape)}")
            return cond
        if cond is None:
            return torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        if self.num_classes == 0:
            raise ValueError("cond: the model is unconditional (num_classes=0), pass None")
        assert cond.shape == (batch,), f"cond must be ({batch},), got {tuple(cond.shape)}"
        return cond


class ARTransformer(TokenTransformer):
    """Decoder-only transformer prior: (indices (B, N), cond) -> logits (B, N, V), cond being (B,)
    labels, (B, L) prompt ids or None.

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
        text: a prompt encoder (`latentlab.nn.text.TextEncoder` interface) whose encoded prompt
            prefixes the stream; a submodule, so it trains and saves with the model. Excludes
            num_classes > 0.
    """

    def __init__(self, cfg: ARConfig, vocab_size: int, seq_len: int, num_classes: int = 0,
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
        self.token_embed = nn.Embedding(vocab_size, cfg.width)
        self.class_embed = nn.Embedding(num_classes + 1, cfg.width)
        self.text = text
        if text is not None:
            self.prompt_embed = nn.Linear(text.width, cfg.width)
        self.pos_embed = nn.Parameter(torch.zeros(1, seq_len, cfg.width))  # (1, N, D)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width)
        self.head = nn.Linear(cfg.width, vocab_size)
        self.initialize_weights()

    def _embed(self, indices: torch.Tensor, cond: torch.Tensor,
               start: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embed positions start .. start + T - 1 of [prompt (text models), class token,
        indices...]: (B, T, D), and which of them are keys a query may see (B, T) bool (None
        without a prompt). `indices` holds the image tokens at those positions (shifted by one:
        the position after the class token's is token 0), `cond` the labels (B,) or prompt ids
        (B, L), used only when start == 0. A text model starts at 0 or after the prompt."""
        image_start = start - self.prompt_len  # position in the image part (class token at 0)
        assert start == 0 or image_start >= 0, f"start {start} splits the prompt"
        x = self.token_embed(indices)  # (B, T', D)
        if image_start <= 0:  # the class token is among the positions
            label = cond if self.text is None else torch.zeros_like(cond[:, 0])  # start token
            x = torch.cat([self.class_embed(label)[:, None], x], dim=1)  # (B, T' + 1, D)
        first = max(image_start, 0)
        x = x + self.pos_embed[:, first:first + x.shape[1]]
        if self.text is None:
            return self.drop(x), None
        keys = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)  # (B, T)
        if start == 0:  # the prompt, encoded once, before the image part
            context = self.text(cond)
            prompt = self.prompt_embed(context.tokens.to(self.prompt_embed.weight.dtype))
            x, keys = torch.cat([prompt, x], dim=1), torch.cat([context.mask, keys], dim=1)
        return self.drop(x), keys

    def _transform(self, x: torch.Tensor, cache: KVCache | None,
                   keys: torch.Tensor | None) -> tuple[torch.Tensor, KVCache]:
        """Blocks, final norm and head on embedded positions (B, T, D) -> logits (B, T, V);
        `keys` (B, T) says which of the new positions are visible (None: all)."""
        if keys is not None and cache is not None:
            keys = torch.cat([cache.keys, keys], dim=1)  # (B, P + T)
        layers = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, None if cache is None else cache.layers[i], keys)
            layers.append(kv)
        return self.head(self.norm(x)), KVCache(tuple(layers), keys)

    def forward(self, indices: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits.

        Args:
            indices: (B, T) int64 image tokens, T <= seq_len (usually T = seq_len).
            cond: (B,) int64 labels in [0, num_classes], num_classes being the null class, or
                for a text model (B, L) int64 prompt ids; None = null class (prompt) for all.

        Returns:
            (B, T, V) logits; logits[:, i] predicts token i from the class token (the prompt)
            and tokens < i. The prompt positions' outputs are not returned.
        """
        assert indices.dim() == 2 and 1 <= indices.shape[1] <= self.seq_len, (
            f"indices must be (B, T) with 1 <= T <= {self.seq_len}, "
            f"got {tuple(indices.shape)}")
        cond = self._check_cond(cond, indices.shape[0], indices.device)
        # (B, L + T, D): prompt (text models), class token, tokens < T-1
        x, keys = self._embed(indices[:, :-1], cond, start=0)
        logits, _ = self._transform(x, None, keys)
        return logits[:, self.prompt_len:]  # (B, T, V)

    def log_prob(self, indices: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Per-token log-probabilities log p(x_i | class or prompt, x_<i): (B, N) float32,
        natural log; the prompt's positions are not scored.

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
            cond: (B,) labels, (B, L) prompt ids, or None (null class / prompt).
            cache: the cache returned by the previous call on the same sequences (holding at
                most L + i + 1 positions, and the whole prompt if any), or None to compute from
                scratch. The prompt is encoded only when there is no cache.
            guidance: classifier-free guidance scale on logits: uncond + scale * (cond - uncond)
                (0 unconditional, 1 conditional; see generators/guidance.py). The cache then
                holds the doubled batch (conditional rows first). None = no guidance.

        Returns:
            Logits (B, V) float32 of token i, and the cache of positions 0..L + i.
        """
        b, i = prefix.shape
        if i >= self.seq_len:
            raise ValueError(f"prefix: {i} tokens decoded, the sequence has only "
                             f"{self.seq_len}")
        if guidance is not None and cond is None:
            raise ValueError(f"guidance: classifier-free guidance (scale {guidance}) needs "
                             "class labels or prompts, got cond=None")
        cond = self._check_cond(cond, b, prefix.device)
        if guidance is not None:  # one batched pass: conditional rows, then unconditional ones
            prefix = torch.cat([prefix, prefix])
            cond = torch.cat([cond, null_like(cond, self.null_class)])
        done, last = 0 if cache is None else cache.length, self.prompt_len + i  # stream positions
        if not 0 <= done <= last + 1 or 0 < done < self.prompt_len:
            raise ValueError(f"cache: holds {done} positions, more than the {last + 1} of a "
                             f"{i}-token prefix, or part of the prompt")
        if done == last + 1:  # already computed; recompute the last position from the rest
            cache = KVCache(tuple((k[:, :, :last], v[:, :, :last]) for k, v in cache.layers),
                            None if cache.keys is None else cache.keys[:, :last])
            done = last
        # positions done .. L + i are the prompt (if done = 0), the class token (image part's
        # position 0) and tokens image_done - 1 .. i - 1
        image_done = max(done - self.prompt_len, 0)
        x, keys = self._embed(prefix[:, max(image_done - 1, 0):], cond, start=done)
        logits, cache = self._transform(x, cache, keys)  # (B', L + i + 1 - done, V)
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
            cond: (n,) labels, (n, L) prompt ids, or None (null class / prompt).
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
                             "class labels or prompts, got cond=None")
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
