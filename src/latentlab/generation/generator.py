"""A trained generator that describes itself, as a tokenizer does: `Generator.save(dir)` writes a
folder from which `Generator.load(dir)` rebuilds it, needing nothing else.

    DIR/generator.safetensors   the network's weights (after training, the EMA weights), with
                                the family and the latentlab version in the header
    DIR/generator.yaml          the run's configuration (`GeneratorRunConfig`), as config.yaml
    DIR/modelled.json           what it models (`Modelled`) and the tokenizer run it names
    DIR/text/                   a text-conditioned generator's prompt tokenizer
                                (`data.text.TextTokenizer.save`), and model.json, the
                                configuration of a frozen pretrained text model (its weights
                                are in generator.safetensors)

A `train-generator` run keeps this folder as RUN/generator/, and `load` takes the run directory
as well. Runs written before the folder held its configuration keep loading: theirs is the run's
config.yaml, beside the folder. The tokenizer whose latent a generator models is not part of it:
`generation.sample` loads it to decode, and a codec holds its own.

Legend: N samples, S one item's shape (`Modelled.shape`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from latentlab import __version__
from latentlab import config as C
from latentlab.data.text import TextTokenizer
from latentlab.errors import CheckpointError, ConfigError, UserError
from latentlab.generation.config import GeneratorRunConfig
from latentlab.generation.models import Modelled, build_models, build_process, pixel_levels
from latentlab.generators.pixelcnn import tokens_to_pixels
from latentlab.io import atomic_path, write_json, write_text
from latentlab.nn.text import PretrainedTextEncoder
from latentlab.tokenizers.tokenizer import load_weights

WEIGHTS, CONFIG, MODELLED = "generator.safetensors", "generator.yaml", "modelled.json"
TEXT, TEXT_MODEL = "text", "model.json"
FOLDER, RUN_CONFIG = "generator", "config.yaml"  # a run's generator folder, its config


class Generator(nn.Module):
    """A generator network, its process (flow, ddpm, vpsde; None for ar and gan), what it models
    and the run configuration it was built from.

    Args:
        cfg: the run's configuration; `cfg.generator` builds the network and the process.
        what: what it models (item shape, kind, classes, vocabulary).
        network: the (trained) network to hold; None builds a freshly initialised one.
        prompts: the tokenizer of the prompts of a text-conditioned generator.
    """

    def __init__(self, cfg: GeneratorRunConfig, what: Modelled, network: nn.Module | None = None,
                 prompts: TextTokenizer | None = None, pretrained: dict | None = None):
        super().__init__()
        if cfg.generator.condition == "auto":  # recorded as what it chose, as a run records it
            cfg = dataclasses.replace(cfg, generator=dataclasses.replace(
                cfg.generator, condition=what.condition,
                text=cfg.generator.text if what.condition == "text" else None))
        self.cfg, self.what, self.prompts = cfg, what, prompts
        if network is None:
            network = build_models(cfg.generator, what, prompts, pretrained)["model"]
        self.network = network
        self.process = build_process(cfg.generator)

    @property
    def family(self) -> str:
        return self.cfg.generator.family

    def encode_prompts(self, prompts: list[str], what: str = "--prompt") -> torch.Tensor:
        """(B, L) token ids of `prompts`; UserError naming `what` for a prompt that is empty or
        that the prompt tokenizer cannot encode, or when the generator is not text-conditioned."""
        if self.prompts is None:
            raise UserError(f"{what}: this generator is not text-conditioned "
                            f"(it is conditioned on {self.what.condition})")
        return self.prompts.encode(prompts, what)

    def check_request(self, labels: torch.Tensor | None, steps: int, guidance: float | None):
        """One-line errors for requests this generator cannot serve (`labels`: class labels,
        or prompt token ids (B, L) for a text-conditioned generator)."""
        if steps < 1:
            raise UserError(f"--steps must be >= 1, got {steps}")
        if labels is not None and self.what.condition == "text":
            if labels.ndim != 2:
                raise UserError("--labels: this generator is conditioned on text; use --prompt")
        elif labels is not None:
            if not self.what.num_classes:
                raise UserError("--labels: this generator is unconditional")
            bad = labels[(labels < 0) | (labels >= self.what.num_classes)]
            if len(bad):
                raise UserError(f"--labels: {int(bad[0])} is outside the trained classes "
                                f"0..{self.what.num_classes - 1}")
        if guidance is not None and self.what.condition == "none":
            raise UserError("--cfg: classifier-free guidance needs a conditional generator; "
                            "this one is unconditional")
        if guidance is not None and self.family == "gan":
            raise UserError("--cfg: a GAN has no classifier-free guidance")

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None, *, steps: int | None = None,
               guidance: float | None = None, generator: torch.Generator | None = None,
               sampler: str = "", tol: float | None = None) -> torch.Tensor:
        """(n, *S) items: normalised latents, pixels or vectors in the network's dtype, or
        int64 token indices; on the network's device.

        Args:
            labels: (n,) int64 classes of a class-conditional generator, (n, L) prompt token
                ids (`encode_prompts`) of a text-conditioned one; None: the null condition.
            steps: sampler steps of a process, decoding steps of maskgit (ar and gan take
                none); None: the config's.
            guidance: classifier-free guidance scale (1 = conditional); None for none.
            generator: the randomness, on the network's device.
            sampler: a sampler of the process; '' for the config's, else the process's default.
            tol: the tolerance of the adaptive sampler (dopri5); None: its default.
        """
        param = next(self.network.parameters())
        cond = labels.to(param.device) if labels is not None else None
        if self.family in ("ar", "pixelcnn"):
            tokens = self.network.sample(n, cond, guidance=guidance, generator=generator)
            if self.what.kind == "pixels":  # pixelcnn: one joint token per pixel, to images
                c, h, w = self.what.shape
                levels = pixel_levels(self.cfg.generator, self.what)
                return tokens_to_pixels(tokens.reshape(n, h, w), levels, c).to(param.dtype)
            return tokens.reshape(n, *self.what.shape)
        if self.family == "maskgit":
            steps = steps if steps is not None else self.cfg.generator.steps
            tokens = self.network.sample(n, cond, steps, guidance=guidance, generator=generator)
            return tokens.reshape(n, *self.what.shape)
        if self.family == "gan":
            if guidance is not None:
                raise ValueError("guidance: a GAN has no classifier-free guidance")
            return self.network.sample(n, cond, generator=generator, device=param.device)
        steps = steps if steps is not None else self.cfg.generator.steps
        return self.process.sample(self.network, (n, *self.what.shape), cond, steps=steps,
                                   sampler=sampler or self.cfg.generator.sampler or None,
                                   generator=generator, guidance=guidance, device=param.device,
                                   dtype=param.dtype, **({} if tol is None else {"tol": tol}))

    # ---------------------------------------------------------------- save / load

    def save(self, directory: str | Path) -> Path:
        """Write the weights, the configuration and what is modelled into `directory`, each
        file atomically."""
        directory = Path(directory)
        tensors = {k: v.detach().cpu().contiguous().clone()
                   for k, v in self.network.state_dict().items()}
        header = {"latentlab_version": __version__, "family": self.family}
        with atomic_path(directory / WEIGHTS) as tmp:
            save_file(tensors, tmp, metadata=header)
        write_text(directory / CONFIG, C.dump_yaml(self.cfg))
        if self.prompts is not None:
            self.prompts.save(directory / TEXT)
            frozen = [m for m in self.network.modules() if isinstance(m, PretrainedTextEncoder)]
            if frozen:
                write_json(directory / TEXT / TEXT_MODEL, frozen[0].config_dict())
        write_json(directory / MODELLED, self.what.as_dict() | {"tokenizer": self.cfg.tokenizer})
        return directory

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> Generator:
        """A generator from the folder `save` wrote or a `train-generator` run directory, in
        eval mode on `map_location`. One-line errors name the folder and what it lacks."""
        folder = find_folder(Path(path))
        cfg_path = config_path(folder)
        try:
            cfg = C.load(GeneratorRunConfig, cfg_path)
        except ConfigError as e:
            raise CheckpointError(str(e)) from None
        what = load_modelled(folder)
        prompts = pretrained = None
        if what.condition == "text":
            prompts = TextTokenizer.load(folder / TEXT)
            pretrained = read_json(folder / TEXT / TEXT_MODEL) if cfg.generator.text.pretrained \
                else None
        try:
            generator = cls(cfg, what, prompts=prompts, pretrained=pretrained)
        except ConfigError as e:  # the config does not fit what it says it modelled
            raise CheckpointError(f"{cfg_path}: {e}") from None
        weights = folder / WEIGHTS
        if not weights.is_file():
            raise CheckpointError(f"{folder}: no {WEIGHTS} (not a saved generator)")
        try:
            tensors = load_file(weights)
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{weights}: cannot be read ({e})") from None
        load_weights(generator.network, tensors, str(weights))
        return generator.to(map_location).eval()


def read_json(path: Path) -> dict:
    """A JSON object from `path`; CheckpointError naming it when missing or damaged."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(record, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return record


def find_folder(path: Path) -> Path:
    """The generator folder at `path`: `path` itself, or a run directory's generator/."""
    if (path / MODELLED).is_file():
        return path
    if (path / FOLDER / MODELLED).is_file():
        return path / FOLDER
    raise CheckpointError(f"{path}: not a generator run or folder (no {MODELLED} in it or in "
                          f"{FOLDER}/)")


def config_path(folder: Path) -> Path:
    """The folder's generator.yaml, or for a run written before it existed the run's
    config.yaml beside the folder."""
    if (folder / CONFIG).is_file():
        return folder / CONFIG
    if folder.name == FOLDER and (folder.parent / RUN_CONFIG).is_file():
        return folder.parent / RUN_CONFIG
    raise CheckpointError(f"{folder}: no {CONFIG} (nor a run's {RUN_CONFIG} above it)")


def load_modelled(folder: Path) -> Modelled:
    """What the generator in `folder` models, from its modelled.json."""
    path = folder / MODELLED
    try:
        record = json.loads(path.read_text())
        return Modelled(tuple(record["shape"]), record["kind"], record["num_classes"],
                        record["vocab_size"], record.get("condition", ""))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: cannot be read ({type(e).__name__}: {e})") from None
