"""The text side of a text-conditioned generator: prompts as token ids, encoded by a small
transformer trained with the generator, and the cross-attention through which a network reads
them.

Token-id convention (`latentlab.data.text.TextTokenizer` makes them): (B, L) int64, every
prompt starts with a begin token, padding is `pad_id` after the prompt, so each row has at
least one real token. The null prompt (classifier-free guidance, prompt dropout) is the
encoding of the empty prompt, the begin token alone: a network fed it sees no content.

Legend: B batch, L tokens per prompt (max_len), E text width, T image tokens, D network width,
N heads, K channels per head.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from latentlab.nn.transformer import MLP, SelfAttention


@dataclass
class TextContext:
    """Encoded prompts, as a network consumes them.

    Attributes:
        tokens: (B, L, E) one vector per token.
        mask: (B, L) bool, True at real tokens (False at padding).
        pooled: (B, E) the mean of the real tokens' vectors.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L, E), (B, L) bool -> (B, E): the mean over the positions where mask is True."""
    weights = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class TextBlock(nn.Module):
    """Pre-norm transformer block over prompt tokens, padding masked out of the attention."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn, self.mlp = SelfAttention(width, heads), MLP(width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), keys=mask)[0]
        return x + self.mlp(self.norm2(x))


class PromptEncoder(nn.Module):
    """What every text encoder shares: `max_len`, the null prompt's ids (a non-persistent
    buffer `null_ids` the subclass registers) and the check of the ids it is given."""

    max_len: int
    null_ids: torch.Tensor

    def null(self, batch: int) -> torch.Tensor:
        """(B, L) ids of the null prompt."""
        return self.null_ids.expand(batch, -1)

    def check(self, ids: torch.Tensor) -> None:
        if ids.ndim != 2 or ids.shape[1] != self.max_len:
            raise ValueError(f"text ids: expected (B, {self.max_len}), got {tuple(ids.shape)}")


class TextEncoder(PromptEncoder):
    """A small bidirectional transformer over prompt token ids, trained with the generator.

    Args:
        vocab_size: ids lie in [0, vocab_size).
        max_len: L, the longest prompt in tokens (learned positions).
        null_ids: (L,) int64, the null prompt's ids (what `None` conditioning means).
        pad_id: the padding id.
        width: E; depth, heads: the transformer's.
    """

    def __init__(self, vocab_size: int, max_len: int, null_ids: torch.Tensor, pad_id: int = 0,
                 width: int = 128, depth: int = 2, heads: int = 4):
        super().__init__()
        if null_ids.shape != (max_len,):
            raise ValueError(f"null_ids: must be ({max_len},), got {tuple(null_ids.shape)}")
        self.width, self.max_len, self.pad_id = width, max_len, pad_id
        self.register_buffer("null_ids", null_ids.to(torch.int64).clone(), persistent=False)
        self.embed = nn.Embedding(vocab_size, width)
        self.pos = nn.Parameter(torch.zeros(max_len, width))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(TextBlock(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width)

    def forward(self, ids: torch.Tensor) -> TextContext:
        """(B, L) int64 token ids -> their `TextContext`."""
        self.check(ids)
        mask = ids != self.pad_id
        x = self.embed(ids) + self.pos
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm(x)
        return TextContext(x, mask, masked_mean(x, mask))


class CrossAttention(nn.Module):
    """Image tokens attend to prompt tokens: (B, T, D) queries, (B, L, E) keys and values with
    padding masked out -> (B, T, D).

    Args:
        width: D; context_width: E; heads: N (must divide D).
    """

    def __init__(self, width: int, context_width: int, heads: int):
        super().__init__()
        if heads < 1 or width % heads:
            raise ValueError(f"heads: must be >= 1 and divide width {width}, got {heads}")
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(context_width, 2 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, context: TextContext) -> torch.Tensor:
        q = rearrange(self.q(x), "b t (n k) -> b n t k", n=self.heads)
        k, v = rearrange(self.kv(context.tokens.to(x.dtype)), "b l (two n k) -> two b n l k",
                         two=2, n=self.heads)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=context.mask[:, None, None, :])
        return self.proj(rearrange(out, "b n t k -> b t (n k)"))


PRETRAINED_TEXT_MODELS = {"clip_text_model": "CLIPTextModel", "clip": "CLIPTextModel",
                          "t5": "T5EncoderModel"}
"""model_type of a Hugging Face config.json -> the `transformers` class of its text encoder."""


def pretrained_model_type(folder: str | Path) -> str:
    """The model_type of the CLIP or T5 model saved in `folder` (its config.json), without
    importing `transformers`; ValueError naming the folder otherwise."""
    path = Path(folder) / "config.json"
    try:
        kind = json.loads(path.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as e:
        raise ValueError(f"{folder}: no readable config.json ({e})") from None
    if kind not in PRETRAINED_TEXT_MODELS:
        raise ValueError(f"{folder}: model_type {kind!r} is not a CLIP or T5 text model "
                         f"(one of {', '.join(PRETRAINED_TEXT_MODELS)})")
    return kind


def _model_class(kind: str) -> type[nn.Module]:
    import transformers  # lazily: importing it takes seconds

    return getattr(transformers, PRETRAINED_TEXT_MODELS[kind])


class PretrainedTextEncoder(PromptEncoder):
    """A frozen pretrained text model (CLIP text tower or T5 encoder) in `TextEncoder`'s place:
    same `width`, `max_len`, `pad_id`, `null_ids`, `null(B)` and `forward(ids) -> TextContext`.

    Its weights never train (`requires_grad_(False)`) and it stays in eval mode when its parent
    trains, so dropout never runs. Build it with `from_folder` (a `save_pretrained` folder, read
    locally: nothing downloads) or `from_config` (the model's config dict, random weights for a
    `load_state_dict` to fill: how a saved generator rebuilds it without the original folder).

    Args:
        model: a `transformers` CLIPTextModel or T5EncoderModel.
        max_len: L; null_ids: (L,) int64 the null prompt; pad_id: the padding id, which may lie
            outside the model's vocabulary (`TextTokenizer.pretrained` may give padding an id of
            its own): padding positions are fed to the model as its own pad id and masked.
    """

    def __init__(self, model: nn.Module, max_len: int, null_ids: torch.Tensor, pad_id: int):
        super().__init__()
        if null_ids.shape != (max_len,):
            raise ValueError(f"null_ids: must be ({max_len},), got {tuple(null_ids.shape)}")
        positions = getattr(model.config, "max_position_embeddings", None)
        if positions is not None and max_len > positions:
            raise ValueError(f"max_len: {max_len} tokens, more than the model's {positions}")
        self.model = model.requires_grad_(False)
        self.width, self.max_len, self.pad_id = model.config.hidden_size, max_len, pad_id
        self.model_pad = model.config.pad_token_id or 0  # what the model is fed at padding
        self.register_buffer("null_ids", null_ids.to(torch.int64).clone(), persistent=False)
        self.eval()

    @classmethod
    def from_folder(cls, folder: str | Path, max_len: int, null_ids: torch.Tensor,
                    pad_id: int) -> PretrainedTextEncoder:
        """The text model saved in `folder` with `save_pretrained`, in float32; ValueError
        naming the folder if it is not a CLIP or T5 text model."""
        model_class = _model_class(pretrained_model_type(folder))
        try:
            model = model_class.from_pretrained(folder, local_files_only=True).float()
        except (OSError, ValueError) as e:
            raise ValueError(f"{folder}: cannot load its {model_class.__name__} "
                             f"({' '.join(str(e).split())[:200]})") from None
        return cls(model, max_len, null_ids, pad_id)

    @classmethod
    def from_config(cls, config: dict, max_len: int, null_ids: torch.Tensor,
                    pad_id: int) -> PretrainedTextEncoder:
        """The same architecture from `config_dict()`'s output, with random weights."""
        import transformers  # lazily: importing it takes seconds

        kind = config.get("model_type")
        if kind not in PRETRAINED_TEXT_MODELS:
            raise ValueError(f"text model config: model_type {kind!r} is not one of "
                             f"{', '.join(PRETRAINED_TEXT_MODELS)}")
        settings = {k: v for k, v in config.items() if k != "model_type"}
        model_config = transformers.AutoConfig.for_model(kind, **settings)
        return cls(_model_class(kind)(model_config), max_len, null_ids, pad_id)

    def config_dict(self) -> dict:
        """The model's configuration as a JSON-able dict (what `from_config` takes)."""
        return self.model.config.to_dict()

    def train(self, mode: bool = True) -> PretrainedTextEncoder:
        return super().train(False)  # frozen: eval mode whatever the parent is set to

    def forward(self, ids: torch.Tensor) -> TextContext:
        """(B, L) int64 token ids -> their `TextContext` (tokens: the last hidden state)."""
        self.check(ids)
        mask = ids != self.pad_id
        with torch.no_grad():  # frozen: no graph through it
            x = self.model(input_ids=ids.masked_fill(~mask, self.model_pad),
                           attention_mask=mask.long()).last_hidden_state
        return TextContext(x, mask, masked_mean(x, mask))
