"""Prompts as token ids: a text tokenizer trained on the training captions, or the tokenizer of a
local pretrained CLIP or T5 model, both Hugging Face `tokenizers` underneath.

The id convention of `latentlab.nn.text`: (B, L) int64, each row the tokenizer's own encoding of
a prompt (its special tokens included: a begin token first), then `pad_id` up to L = max_len.
The null prompt is the encoding of the empty prompt, so it holds at least one real token.

Legend: B prompts, L max_len.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers.trainers import BpeTrainer

from latentlab.errors import CheckpointError, DataError, UserError
from latentlab.io import write_json, write_text
from latentlab.nn.text import pretrained_model_type

PAD, UNK, BOS = "[PAD]", "[UNK]", "[BOS]"  # ids 0, 1, 2 of a trained tokenizer
TOKENIZER, SETTINGS = "tokenizer.json", "text.json"


class TextTokenizer:
    """Prompts <-> (B, L) int64 token ids, a Hugging Face `tokenizers.Tokenizer` underneath.

    Make one with `train` (on the training captions), `pretrained` (a local CLIP or T5 folder)
    or `load` (what `save` wrote).

    Args:
        tokenizer: the Hugging Face tokenizer; its post-processor adds the special tokens.
        max_len: L, the longest prompt in tokens, special tokens included.
        pad_id: the id after each prompt; never one of a prompt's own tokens.
        vocab_size: ids lie in [0, vocab_size); above the tokenizer's own vocabulary when
            `pad_id` is an id of its own (see `pretrained`).
        unk_id: the tokenizer's unknown token (a prompt holding it is refused), or None.
        words: the words of the training captions (a prompt with another word is refused), or
            None (any word the tokenizer encodes is accepted).
        kind: "trained" or "pretrained".
    """

    def __init__(self, tokenizer: Tokenizer, max_len: int, pad_id: int, vocab_size: int,
                 unk_id: int | None = None, words: frozenset[str] | None = None,
                 kind: str = "trained"):
        tokenizer.no_padding()  # padding and length are ours (`encode`), not the file's
        tokenizer.no_truncation()
        self.tokenizer, self.kind, self.words, self.unk_id = tokenizer, kind, words, unk_id
        self._max_len, self._pad_id, self._vocab_size = max_len, pad_id, vocab_size
        null = tokenizer.encode("").ids
        if not null or pad_id in null:
            raise ValueError("the empty prompt must encode to at least one token that is not "
                             f"padding, got ids {null} (pad id {pad_id})")
        if len(null) > max_len:
            raise ValueError(f"max_len: the empty prompt alone is {len(null)} tokens, more "
                             f"than {max_len}")
        self._null = torch.full((max_len,), pad_id, dtype=torch.int64)
        self._null[: len(null)] = torch.tensor(null)

    # ------------------------------------------------------------------ properties

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def max_len(self) -> int:
        return self._max_len

    @property
    def pad_id(self) -> int:
        return self._pad_id

    @property
    def null_ids(self) -> torch.Tensor:
        """(L,) int64: the empty prompt, begin token (and end token, if any) then padding."""
        return self._null.clone()

    # ------------------------------------------------------------------ making one

    @classmethod
    def train(cls, captions: list[str], vocab_size: int = 512, max_len: int = 32) -> TextTokenizer:
        """A byte-pair-encoding tokenizer trained on `captions`, "[BOS]" before every prompt.

        BPE rather than WordPiece: in `tokenizers` (0.23) the WordPiece trainer numbers its
        "##" continuation pieces in hash-map order, so the same captions give different ids
        from one process to the next (huggingface/tokenizers#1794); BPE over sentencepiece-style
        word starts ("▁red") has no continuation pieces and trains deterministically, and its
        decoder restores the spaces. Text is NFKC-normalised, lower-cased and split at
        whitespace and punctuation. Special tokens: "[PAD]" = 0, "[UNK]" = 1 (a character never
        seen in training), "[BOS]" = 2.
        """
        tokenizer = Tokenizer(models.BPE(unk_token=UNK, fuse_unk=True))
        tokenizer.normalizer = normalizers.Sequence([
            normalizers.NFKC(), normalizers.Lowercase(),
            normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()])
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()])
        tokenizer.decoder = decoders.Metaspace()
        trainer = BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, UNK, BOS],
                             show_progress=False)
        tokenizer.train_from_iterator(captions, trainer=trainer)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", special_tokens=[(BOS, tokenizer.token_to_id(BOS))])
        words = frozenset(w for text in set(captions) for w in _words(tokenizer, text))
        return cls(tokenizer, max_len, pad_id=tokenizer.token_to_id(PAD),
                   vocab_size=tokenizer.get_vocab_size(), unk_id=tokenizer.token_to_id(UNK),
                   words=words)

    @classmethod
    def pretrained(cls, folder: str | Path, max_len: int) -> TextTokenizer:
        """The tokenizer of a local CLIP or T5 text model saved with `save_pretrained`.

        Rule: a prompt's ids are the model tokenizer's own encoding, its special tokens
        included (CLIP: begin and end tokens around the prompt; T5: the end token "</s>" after
        it), padded with `pad_id`. The pad id is the model's pad token unless that is one of
        the tokens the empty prompt encodes to (CLIP's pad token is often its end token); then
        padding gets an id of its own, one past the vocabulary (`vocab_size` grows by one), which
        no prompt can hold. `PretrainedTextEncoder` feeds the model its own pad id at masked
        positions, so the model never sees that id.
        """
        folder = Path(folder)
        try:
            config = json.loads((folder / "config.json").read_text())
            pretrained_model_type(folder)
            config = config.get("text_config") or config  # a whole CLIP model: its text side
        except (ValueError, OSError) as e:
            raise UserError(f"{folder}: not a CLIP or T5 text model folder ({e})") from None
        path = folder / TOKENIZER
        if not path.is_file():
            raise UserError(f"{folder}: no {TOKENIZER} (save the model's tokenizer into the "
                            "folder with save_pretrained)")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as e:  # the Rust side raises a bare Exception
            raise UserError(f"{path}: not a Hugging Face tokenizer file ({_line(e)})") from None
        special = _special_tokens(folder)
        pad = _token_id(tokenizer, special.get("pad_token"), config.get("pad_token_id"))
        unk = _token_id(tokenizer, special.get("unk_token"), None)
        size = tokenizer.get_vocab_size()
        null = tokenizer.encode("").ids
        if pad is None or pad in null:
            pad, size = size, size + 1
        positions = config.get("max_position_embeddings")
        if positions is not None and max_len > positions:
            raise UserError(f"max_len: {max_len} tokens, more than the {positions} positions of "
                            f"the model in {folder}")
        try:
            return cls(tokenizer, max_len, pad, size, unk_id=unk, kind="pretrained")
        except ValueError as e:
            raise UserError(f"{folder}: {e}") from None

    # ------------------------------------------------------------------ encoding

    def encode(self, prompts: list[str], what: str = "prompt") -> torch.Tensor:
        """Prompts -> (B, L) int64 ids: each the tokenizer's encoding, then padding.

        A prompt that is empty, holds a word the tokenizer cannot encode (or, for a trained
        tokenizer, a word no training caption has), or is longer than `max_len` tokens is a
        one-line `UserError` that starts with `what` and quotes the prompt.
        """
        def fail(i: int, reason: str) -> UserError:
            number = f" {i + 1} of {len(prompts)}" if len(prompts) > 1 else ""
            return UserError(f"{what}{number} {_quote(prompts[i])}: {reason}")

        ids = self._encode(prompts, fail)
        if self.words is not None:
            for i, text in enumerate(prompts):
                unseen = [w for w in _words(self.tokenizer, text) if w not in self.words]
                if unseen:
                    raise fail(i, f"the word \"{unseen[0]}\" is in no training caption, the "
                                  "text tokenizer only knows their words")
        return ids

    def encode_captions(self, captions: list[str], what: str = "captions") -> torch.Tensor:
        """Training captions -> (B, L) int64 ids, in bulk: one batched call of the Rust tokenizer
        over the distinct captions (synthetic captions repeat a few templates).

        Like `encode` but a caption's words need not be training words (validation captions);
        a caption that is empty, holds a character the tokenizer cannot encode or is too long is
        a one-line `DataError` naming its index.
        """
        return self._encode(captions, lambda i, reason: DataError(
            f"{what}: caption {i} {_quote(captions[i])}: {reason}"))

    def _encode(self, texts: list[str], fail: Callable[[int, str], Exception]) -> torch.Tensor:
        if isinstance(texts, str):
            raise TypeError("prompts: a list of strings, got one string")
        first: dict[str, int] = {}  # each distinct text once (synthetic captions repeat a few
        for i, text in enumerate(texts):  # templates), and the index of its first occurrence
            if not isinstance(text, str) or not text.strip():
                raise fail(i, "is empty")
            first.setdefault(text, i)
        distinct = list(first)
        out = np.full((len(distinct), self.max_len), self.pad_id, dtype=np.int64)
        for k, encoding in enumerate(self.tokenizer.encode_batch(distinct)):
            ids = encoding.ids
            if len(ids) > self.max_len or self.unk_id in ids or self.pad_id in ids:
                i = first[distinct[k]]  # rare (but every CLIP prompt: its unk is its end token)
                self._check_tokens(texts[i], encoding, lambda reason, i=i: fail(i, reason))
                if len(ids) > self.max_len:
                    raise fail(i, f"is {len(ids)} tokens long, more than the limit of "
                                  f"{self.max_len} tokens")
            out[k, : len(ids)] = ids
        row = {text: k for k, text in enumerate(distinct)}
        return torch.from_numpy(out[[row[text] for text in texts]])

    def _check_tokens(self, text: str, encoding, fail: Callable[[str], Exception]) -> None:
        """Raise for an unknown token of the prompt itself (the post-processor's own special
        tokens may share its id, as CLIP's end token does) or for the padding token."""
        for k, (token, special) in enumerate(zip(encoding.ids, encoding.special_tokens_mask,
                                                 strict=True)):
            if special:
                continue
            if token == self.unk_id:
                start, end = encoding.offsets[k]
                word = _word_at(text, encoding, encoding.word_ids[k])
                raise fail(f"the text tokenizer cannot encode the word \"{word}\" "
                           f"(\"{text[start:end].strip()}\" is unknown to it)")
            if token == self.pad_id:
                raise fail(f"holds the padding token \"{encoding.tokens[k]}\"")

    def decode(self, ids: torch.Tensor) -> list[str]:
        """(B, L) or (L,) ids -> B prompts (lower-cased, special tokens and padding dropped)."""
        ids = torch.as_tensor(ids)
        rows = [[t for t in row if t != self.pad_id]
                for row in ids.reshape(-1, ids.shape[-1]).tolist()]
        return self.tokenizer.decode_batch(rows, skip_special_tokens=True)

    # ------------------------------------------------------------------ save / load

    def save(self, directory: str | Path) -> Path:
        """Write `directory/tokenizer.json` (Hugging Face format) and `directory/text.json`
        (max_len, pad id, ...), each atomically."""
        directory = Path(directory)
        write_text(directory / TOKENIZER, self.tokenizer.to_str())
        write_json(directory / SETTINGS, {
            "kind": self.kind, "max_len": self.max_len, "pad_id": self.pad_id,
            "vocab_size": self.vocab_size, "unk_id": self.unk_id,
            "words": None if self.words is None else sorted(self.words)})
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> TextTokenizer:
        """The tokenizer `save` wrote; a missing or damaged file is a one-line
        `CheckpointError` naming it."""
        directory = Path(directory)
        path, settings = directory / TOKENIZER, directory / SETTINGS
        for p in (path, settings):
            if not p.is_file():
                raise CheckpointError(f"{p}: missing (not a saved text tokenizer)")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as e:  # the Rust side raises a bare Exception
            raise CheckpointError(f"{path}: damaged ({_line(e)})") from None
        try:
            s = json.loads(settings.read_text())
            words = None if s["words"] is None else frozenset(s["words"])
            return cls(tokenizer, int(s["max_len"]), int(s["pad_id"]), int(s["vocab_size"]),
                       unk_id=s["unk_id"], words=words, kind=s["kind"])
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{settings}: damaged ({_line(e)})") from None


def _words(tokenizer: Tokenizer, text: str) -> list[str]:
    """The normalised words and punctuation marks of `text`, as the tokenizer splits it."""
    pieces = tokenizer.pre_tokenizer.pre_tokenize_str(tokenizer.normalizer.normalize_str(text))
    return [w for piece, _ in pieces if (w := piece.lstrip("▁"))]


def _word_at(text: str, encoding, word: int | None) -> str:
    """The characters of `text` behind the tokens of pre-tokenized word number `word`."""
    spans = [encoding.offsets[k] for k, w in enumerate(encoding.word_ids) if w == word]
    return text[min(s for s, _ in spans): max(e for _, e in spans)].strip()


def _special_tokens(folder: Path) -> dict[str, str]:
    """{"pad_token": "<pad>", ...} from the folder's tokenizer_config.json and
    special_tokens_map.json (either may be absent; a token may be {"content": ...})."""
    found: dict[str, str] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        try:
            entries = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        for key in ("pad_token", "unk_token"):
            token = entries.get(key)
            token = token.get("content") if isinstance(token, dict) else token
            if isinstance(token, str):
                found[key] = token
    return found


def _token_id(tokenizer: Tokenizer, token: str | None, fallback: int | None) -> int | None:
    found = tokenizer.token_to_id(token) if token is not None else None
    return found if found is not None else fallback


def _quote(text: object) -> str:
    """A prompt on one line, shortened: `"a red circle at..."`."""
    flat = " ".join(str(text).split())
    return '"' + (flat if len(flat) <= 60 else flat[:57] + "...") + '"'


def _line(e: BaseException) -> str:
    return " ".join(str(e).split())[:200]
