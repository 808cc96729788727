"""`latentlab sample`: draw from a trained generator, decode through its tokenizer, write files.

The samples file is a public contract (documented in the README):
    samples.npz   images  uint8 (N, H, W, C), pixel values 0..255
                  labels  int64 (N,), the class each sample was drawn for (-1: unconditional
                          or text-conditioned)
                  prompts unicode (N,), the prompt of each sample (text-conditioned only;
                          numpy's fixed-width string dtype, loadable without pickle)
For a generator of vectors (the mixture toy) `images` is replaced by `vectors` float32 (N, D).
With layout "adm" the file also holds the arrays the ADM evaluation suite reads (Dhariwal &
Nichol 2021, `evaluations/evaluator.py`): arr_0 = images, arr_1 = labels (conditional only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from latentlab import pixels
from latentlab.errors import UserError
from latentlab.generation.encode import load_tokenizer
from latentlab.generation.generator import Generator
from latentlab.io import atomic_path
from latentlab.tokenizers.tokenizer import Tokenizer


@dataclass
class LoadedGenerator:
    """A trained generator ready to sample, with the tokenizer that decodes what it makes."""

    generator: Generator
    tokenizer: Tokenizer | None

    @classmethod
    def load(cls, run: str | Path, device: str | torch.device = "cpu") -> LoadedGenerator:
        generator = Generator.load(run, map_location=device)
        tokenizer = (load_tokenizer(generator.cfg.tokenizer, generator.cfg.data.spec, device)
                     if generator.cfg.tokenizer else None)
        return cls(generator, tokenizer)

    @torch.no_grad()
    def decode(self, items: torch.Tensor) -> torch.Tensor:
        """Generated items -> images in [-1, 1] (B, C, H, W), or vectors (B, D)."""
        if self.tokenizer is None:
            return items.float().clamp(-1, 1) if items.ndim == 4 else items.float()
        latent = items if self.generator.what.kind == "indices" else self.tokenizer.denormalize(
            items.float())
        return self.tokenizer.decode(latent, batch_size=256).float()


def default_labels(n: int, num_classes: int) -> torch.Tensor | None:
    """Labels 0, 1, ..., K-1, 0, 1, ... for a conditional generator; None otherwise."""
    return torch.arange(n) % num_classes if num_classes else None


def fill(values: list, n: int) -> list:
    """`values` repeated to length n."""
    return (values * ((n + len(values) - 1) // len(values)))[:n]


def default_prompts(generator: Generator, n: int) -> list[str]:
    """The first n captions of the test split of a text-conditioned generator's data (cycled)."""
    from latentlab.data import load_dataset  # here: most samplers never need the data

    test = load_dataset(generator.cfg.data.spec, "test")
    return fill([test.caption(i) for i in range(min(n, len(test)))], n)


def sample_to_file(run: str | Path, n: int, out: str | Path, labels: list[int] | None = None,
                   steps: int | None = None, guidance: float | None = None, seed: int = 0,
                   grid: str | Path | None = None, sampler: str = "",
                   batch_size: int = 500, layout: str = "latentlab",
                   prompts: list[str] | None = None, tol: float | None = None) -> dict:
    """Draw `n` samples from the generator in `run`, write `out` (.npz) and optionally a grid.

    `prompts` (text-conditioned generators; repeated to fill n; default: the test split's
    captions) or `labels` (class-conditional; repeated; default 0, 1, ..., K-1, 0, ...) say what
    each sample is drawn for. `layout` "adm" adds arr_0 (and arr_1 for labelled samples) for the
    ADM evaluation suite. `tol` is the tolerance of the adaptive sampler (`sampler` dopri5).
    """
    if n < 1:
        raise UserError(f"--n must be >= 1, got {n}")
    loaded = LoadedGenerator.load(run)
    generator = loaded.generator
    steps = steps if steps is not None else generator.cfg.generator.steps
    if labels and generator.what.condition == "text":
        raise UserError("--labels: this generator is conditioned on text; use --prompt")
    if prompts is not None or generator.what.condition == "text":
        given = prompts if prompts is not None else default_prompts(generator, n)
        ids = generator.encode_prompts(given)  # an error numbers a prompt among those given
        prompts, chosen = fill(given, n), ids[torch.arange(n) % len(given)]
    elif labels:
        chosen = torch.tensor(fill(labels, n), dtype=torch.int64)
    else:
        chosen = default_labels(n, generator.what.num_classes)
    generator.check_request(chosen, steps, guidance)
    name, process = sampler or generator.cfg.generator.sampler, generator.process
    if name and (process is None or name not in process.samplers):
        have = ", ".join(process.samplers) if process is not None else "none"
        raise UserError(f"--sampler: {generator.family} has no sampler {name!r} (it has "
                        f"{have})")
    if tol is not None and name != "dopri5":
        raise UserError("--tol: only the adaptive sampler takes a tolerance (--sampler dopri5)")
    g = torch.Generator().manual_seed(seed)
    parts = []
    for start in range(0, n, batch_size):
        m = min(batch_size, n - start)
        cond = chosen[start:start + m] if chosen is not None else None
        items = generator.sample(m, cond, steps=steps, guidance=guidance, generator=g,
                                 sampler=sampler, tol=tol)
        parts.append(loaded.decode(items).cpu())
    labels = chosen if chosen is not None and chosen.ndim == 1 else None
    write_samples(out, torch.cat(parts), labels, layout, prompts, grid)
    return {"n": n, "out": str(out), "steps": steps, "guidance": guidance}


def write_samples(out: str | Path, samples: torch.Tensor, labels: torch.Tensor | None,
                  layout: str = "latentlab", prompts: list[str] | None = None,
                  grid: str | Path | None = None) -> None:
    """Write samples (N, C, H, W) in [-1, 1] or vectors (N, D) to `out` in the public format
    (atomically), with their labels (N,) (None: -1) and prompts, and a grid of the first 100."""
    n = len(samples)
    saved_labels = (labels if labels is not None else torch.full((n,), -1)).numpy()
    arrays = ({"images": pixels.to_hwc_uint8(samples)} if samples.ndim == 4
              else {"vectors": samples.numpy().astype(np.float32)})
    if layout == "adm":
        if samples.ndim != 4:
            raise UserError("--format adm: the ADM layout holds images; this generator makes "
                            "vectors")
        arrays["arr_0"] = arrays["images"]
        if labels is not None:
            arrays["arr_1"] = saved_labels.astype(np.int64)
    if prompts is not None:
        arrays["prompts"] = np.array(prompts, dtype=np.str_)
    with atomic_path(Path(out)) as tmp, open(tmp, "wb") as f:
        np.savez(f, labels=saved_labels.astype(np.int64), **arrays)
    if grid and samples.ndim == 4:
        pixels.save_grid(samples[:100], grid, nrow=10, scale=4)


@torch.no_grad()
def prior_samples_to_file(tokenizer_run: str | Path, n: int, out: str | Path, spec: str = "",
                          seed: int = 0, grid: str | Path | None = None,
                          layout: str = "latentlab") -> dict:
    """The textbook VAE sampler: decode z ~ N(0, I), the KL bottleneck's prior, drawn in the
    latent shape of the images of `spec` (default: the data the run trained on), and write them
    as `sample_to_file` does (labels -1). The latent statistics play no part: they describe
    the encoder's posteriors over the data, not the prior the KL term pulls them towards."""
    if n < 1:
        raise UserError(f"--n must be >= 1, got {n}")
    tokenizer = Tokenizer.load(tokenizer_run)
    if tokenizer.cfg.bottleneck.kind != "kl":
        raise UserError(f"--prior: the bottleneck of {tokenizer_run} is "
                        f"{tokenizer.cfg.bottleneck.kind}; only a VAE (kl) has a prior to sample")
    spec = spec or run_data(tokenizer_run)
    from latentlab.data import load_dataset

    try:
        shape = tokenizer.latent_shape(load_dataset(spec, "test").shape)
    except ValueError as e:
        raise UserError(f"--data {spec}: {e}") from None
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, *shape, generator=g)
    write_samples(out, tokenizer.decode(z, batch_size=256).float(), None, layout, None, grid)
    return {"n": n, "out": str(out)}


def run_data(tokenizer_run: str | Path) -> str:
    """The dataset spec a train-tokenizer run recorded in its config.yaml; UserError if none."""
    import yaml

    try:
        spec = yaml.safe_load((Path(tokenizer_run) / "config.yaml").read_text())["data"]["spec"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        raise UserError(f"{tokenizer_run}: no data spec in its config.yaml; name the data "
                        "with --data") from None
    return str(spec)
