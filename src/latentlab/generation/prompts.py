"""Text conditioning of a generator run: what a run is conditioned on, the tokenizer of its
prompts, and datasets whose labels are prompts.

A text-conditioned generator trains on the data's captions: a caption tokenizer is trained on
the training captions (or a pretrained model's is used), every caption is encoded once to
token ids, and `Prompted` hands them to the training loop as `Batch.y`, (B, L) int64 in place
of (B,) class labels.

Legend: B batch, N items, L tokens per prompt.
"""

from __future__ import annotations

import dataclasses

import torch

from latentlab.data.base import Batch, LatentlabDataset
from latentlab.data.text import TextTokenizer
from latentlab.errors import ConfigError
from latentlab.generation.config import GeneratorConfig, TextConfig


def resolve_condition(cfg: GeneratorConfig, data: LatentlabDataset) -> GeneratorConfig:
    """`cfg` with `condition` chosen for `data` when it is auto (text when captioned, else
    class when labelled, else none); ConfigError when the data lacks what `condition` needs."""
    condition = cfg.condition
    if condition == "auto":
        condition = "text" if data.captioned else "class" if data.num_classes else "none"
    if condition == "text" and not data.captioned:
        raise ConfigError(f"generator.condition: text, but {data.name} has no captions")
    if condition == "class" and not data.num_classes:
        raise ConfigError(f"generator.condition: class, but {data.name} has no labels")
    text = (cfg.text or TextConfig()) if condition == "text" else None
    return dataclasses.replace(cfg, condition=condition, text=text)


def prompt_tokenizer(cfg: TextConfig, train_data: LatentlabDataset) -> TextTokenizer:
    """The tokenizer of a run's prompts: a pretrained model's, or one trained on the training
    captions."""
    if cfg.pretrained:
        return TextTokenizer.pretrained(cfg.pretrained, cfg.max_len)
    captions = [train_data.caption(i) for i in range(len(train_data))]
    return TextTokenizer.train(captions, cfg.vocab_size, cfg.max_len)


class Prompted(LatentlabDataset):
    """`data` with each item's caption, encoded by `prompts`, as its label: `Batch.y` is
    (B, L) int64 token ids."""

    def __init__(self, data: LatentlabDataset, prompts: TextTokenizer):
        self.data = data
        self.ids = prompts.encode_captions([data.caption(i) for i in range(len(data))],
                                           data.name)  # (N, L)
        self.name, self.shape, self.class_names = data.name, data.shape, []

    def __len__(self) -> int:
        return len(self.data)

    @property
    def captioned(self) -> bool:
        return True

    def caption(self, i: int) -> str | None:
        return self.data.caption(i)

    def load(self, i: int) -> tuple[torch.Tensor, int]:
        raise TypeError("Prompted items have token-id labels: use __getitems__")

    def __getitems__(self, indices: list[int]) -> Batch:
        batch = self.data.__getitems__(indices)
        return Batch(batch.x, self.ids[torch.as_tensor(indices, dtype=torch.int64)],
                     batch.skipped)

    def fingerprint(self) -> str:
        return self.data.fingerprint()
