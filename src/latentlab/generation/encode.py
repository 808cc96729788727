"""`latentlab encode`: a dataset encoded once through a tokenizer, as a latent cache.

Continuous tokenizers store normalised latents (`Tokenizer.normalize`, about zero mean and unit
variance per channel); discrete ones store token indices. The cache records the tokenizer it
came from (path and fingerprint) and is refused by any other.

A diffusers autoencoder folder serves as a tokenizer too (`load_tokenizer`). It carries no
statistics of this data, so they are fitted on the training split, as `train-tokenizer` does for
its own models, and kept in the record of that split's cache, where every later use reads them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from latentlab.data import load_dataset
from latentlab.data.base import LatentlabDataset, eval_batches
from latentlab.data.latent_cache import LatentCache
from latentlab.data.latent_cache_writer import write_latent_cache
from latentlab.errors import DataError
from latentlab.tokenizers.diffusers_ae import is_diffusers_folder
from latentlab.tokenizers.tokenizer import Tokenizer, fingerprint

STATISTICS = "latent_statistics"
"""The key of a cache's source record holding a diffusers folder's fitted statistics."""


def source_record(tokenizer_run: str | Path, tokenizer: Tokenizer | None = None) -> dict[str, str]:
    """What a cache records of its tokenizer: path, fingerprint and codebook size (0 if
    continuous)."""
    tokenizer = tokenizer or Tokenizer.load(tokenizer_run)
    size = tokenizer.bottleneck.codebook_size if tokenizer.discrete else 0
    record = {"tokenizer": str(tokenizer_run), "fingerprint": fingerprint(tokenizer_run),
              "codebook_size": str(size)}
    if is_diffusers_folder(tokenizer_run) and not tokenizer.discrete:
        record[STATISTICS] = json.dumps({"shift": tokenizer.latent_shift.tolist(),
                                         "scale": tokenizer.latent_scale.tolist()})
    return record


def load_tokenizer(tokenizer_run: str | Path, spec: str,
                   map_location: str | torch.device = "cpu") -> Tokenizer:
    """`Tokenizer.load(tokenizer_run)`; a diffusers folder gets the latent statistics of `spec`:
    read from the record of its training-split cache, or fitted on that split (eval mode, fp32)
    when there is none yet."""
    tokenizer = Tokenizer.load(tokenizer_run, map_location=map_location)
    if tokenizer.fitted or tokenizer.discrete:
        return tokenizer
    train = default_cache_path(tokenizer_run, spec, "train")
    if train.exists():
        record = json.loads(LatentCache(train).source.get(STATISTICS, "null"))
        if record is not None:
            tokenizer.latent_shift.copy_(torch.tensor(record["shift"]))
            tokenizer.latent_scale.copy_(torch.tensor(record["scale"]))
            tokenizer.fitted = True
            return tokenizer
    data = load_dataset(spec, "train")
    _check(tokenizer, data)
    tokenizer.fit_statistics(b.x for b in eval_batches(data, tokenizer.latent_shift.device))
    return tokenizer


def _check(tokenizer: Tokenizer, data: LatentlabDataset) -> None:
    try:
        tokenizer.check_input(data.shape)
    except ValueError as e:
        raise ValueError(f"the tokenizer cannot take {data.name}: {e}") from None


@torch.no_grad()
def encode_dataset(tokenizer: Tokenizer, data: LatentlabDataset, out: str | Path,
                   source: dict[str, str], overwrite: bool = False) -> Path:
    """Encode every item of `data` (eval mode, fp32) into a latent cache at `out`."""
    tokenizer.eval()
    _check(tokenizer, data)
    device = tokenizer.latent_shift.device

    def batches():
        for batch in eval_batches(data, device):
            enc = tokenizer.encode(batch.x)
            values = enc.indices if tokenizer.discrete else tokenizer.normalize(enc.latent)
            yield values.cpu(), batch.y.cpu()

    kind = "indices" if tokenizer.discrete else "latents"
    captions = captions_of(data) if data.captioned else None
    return write_latent_cache(Path(out), batches(), source, data.class_names, kind,
                              overwrite=overwrite, captions=captions)


def captions_of(data: LatentlabDataset) -> list[str]:
    """Every item's caption, in order; DataError naming the first item without one."""
    captions = [data.caption(i) for i in range(len(data))]
    missing = next((i for i, c in enumerate(captions) if not c), None)
    if missing is not None:
        raise DataError(f"{data.name}: item {missing} has no caption")
    return captions


def default_cache_path(tokenizer_run: str | Path, spec: str, split: str) -> Path:
    """RUN/caches/<spec as a file name>-<split>: caches live beside their tokenizer."""
    safe = re.sub(r"[^A-Za-z0-9._=-]+", "_", spec).strip("_")
    return Path(tokenizer_run) / "caches" / f"{safe}-{split}"


def cached_split(tokenizer_run: str | Path, spec: str, split: str,
                 captions: bool = False) -> LatentCache:
    """The cache of one split, written on first use, refused if another tokenizer made it.
    `captions`: the caller needs the data's captions (an older cache without them is
    rewritten)."""
    tokenizer = load_tokenizer(tokenizer_run, spec)
    source = source_record(tokenizer_run, tokenizer)
    path = default_cache_path(tokenizer_run, spec, split)
    if not path.exists():
        encode_dataset(tokenizer, load_dataset(spec, split), path, source)
    cache = LatentCache(path, expect_source=source)
    if not cache.captioned and captions and (data := load_dataset(spec, split)).captioned:
        # a cache written before caches kept captions: written again, with them
        encode_dataset(tokenizer, data, path, source, overwrite=True)
        cache = LatentCache(path, expect_source=source)
    return cache
