"""The model of a codec: a discrete tokenizer and an autoregressive prior over its tokens.

A codec run (made by `latentlab train-codec`) is a directory::

    RUN/codec.json          manifest: {"format": 1, "tokenizer": "tokenizer-run",
                            "prior": "prior-run", "fingerprint": "…", "tile": [C, H, W],
                            "grid": [h, w], "vocab": V, "data": SPEC}
    RUN/tokenizer-run/      a `train-tokenizer` run (discrete bottleneck: vq, lfq, fsq, gumbel
                            or hvq)
    RUN/prior-run/          a `train-generator` run of family `ar` on that tokenizer's tokens
                            (or, given explicitly as --prior, of family `pixelcnn`)

The paths in the manifest are relative to RUN, so a codec run can be moved or copied whole.
The pair can also be given explicitly (`CodecModel.load(tokenizer=..., prior=...)`).

The model's **fingerprint** is the first 8 bytes of a sha256 over both architectures (their
configs as canonical JSON) and every tensor of both state dicts (name, dtype, shape, bytes), so
it names the weights and configs themselves, not the files that hold them. It deliberately
leaves out the torch version and CPU: the same model decodes the same file anywhere its prior
computes the same fp32 numbers, and where it does not, the token checksum of the file says so
(see `codec.py` and docs/codec.md).

The tile a codec codes is the tokenizer's training resolution: the prior was trained on token
grids of one shape (h, w), so a tile is (h * f, w * f) pixels for a tokenizer of factor f. An
hvq tokenizer's tile has a latent grid (h, w) too, its tokens being the top grid (h/2, w/2) and
then that grid, one sequence.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch
from torch import nn

from latentlab import config as C
from latentlab.errors import CheckpointError, UserError
from latentlab.generation.generator import Generator
from latentlab.generators.autoregressive import ARTransformer
from latentlab.generators.hierarchical import top_side
from latentlab.generators.pixelcnn import PixelCNN
from latentlab.nn import hash_tensors
from latentlab.tokenizers.tokenizer import Tokenizer

MANIFEST = "codec.json"
MANIFEST_FORMAT = 1
TOKENIZER_DIR, PRIOR_DIR = "tokenizer-run", "prior-run"


class CodecModel:
    """A discrete tokenizer and an autoregressive prior over its token grids, checked to fit.

    The prior is moved to the CPU in fp32: the codec computes its probabilities there, where
    the arithmetic is reproducible (docs/codec.md). The tokenizer stays where it is.

    Args:
        tokenizer: a discrete convolutional tokenizer (vq, lfq, fsq, gumbel, hvq).
        prior: an `ARTransformer` or a `PixelCNN` over its token indices (both give exact
            probabilities per position in raster order through `next_token_logits`).
        grid: (h, w), the latent grid of a tile; the prior models its tokens (h * w of them,
            or hvq's top and bottom grids in one sequence).
    """

    def __init__(self, tokenizer: Tokenizer, prior: ARTransformer | PixelCNN,
                 grid: tuple[int, int]):
        if not tokenizer.discrete or tokenizer.cfg.arch.kind == "mlp":
            raise CheckpointError("tokenizer: the codec needs a discrete image tokenizer (conv "
                                  f"or diffusers arch, vq/lfq/fsq/gumbel/hvq bottleneck), got "
                                  f"{tokenizer.cfg.arch.kind} with "
                                  f"{tokenizer.cfg.bottleneck.kind}")
        if prior.vocab_size != tokenizer.bottleneck.codebook_size:
            raise CheckpointError(f"prior: vocabulary of {prior.vocab_size} tokens, but the "
                                  f"tokenizer has {tokenizer.bottleneck.codebook_size} codes")
        self.tokens = tokenizer.bottleneck.index_shape(tuple(grid))
        if math.prod(self.tokens) != prior.seq_len:
            raise CheckpointError(f"prior: {prior.seq_len} tokens per item, not the "
                                  f"{math.prod(self.tokens)} of a {grid[0]}x{grid[1]} grid")
        self.tokenizer = tokenizer.eval()
        self.prior = prior.to("cpu", torch.float32).eval()
        self.grid = (int(grid[0]), int(grid[1]))
        self.channels = tokenizer.in_channels
        self.tile = (self.grid[0] * tokenizer.factor, self.grid[1] * tokenizer.factor)
        self.vocab = prior.vocab_size
        self.fingerprint = model_fingerprint(tokenizer, prior)

    @property
    def fingerprint_hex(self) -> str:
        return self.fingerprint.hex()

    @classmethod
    def load(cls, run: str | Path | None = None, tokenizer: str | Path | None = None,
             prior: str | Path | None = None) -> CodecModel:
        """From a codec run (`run`), or from a tokenizer run and a prior run given explicitly.

        Raises CheckpointError (one line) when a part is missing, unreadable, does not fit the
        other, or (for a codec run) no longer matches the fingerprint its manifest recorded.
        """
        if (run is None) == (tokenizer is None and prior is None):
            raise UserError("give a codec run, or a tokenizer run and a prior run, not both")
        manifest = None
        if run is not None:
            manifest = read_manifest(run)
            tokenizer, prior = (Path(run) / manifest["tokenizer"], Path(run) / manifest["prior"])
        elif tokenizer is None or prior is None:
            raise UserError("a codec model needs both a tokenizer run and a prior run")
        ar, grid = load_prior(prior)
        model = cls(Tokenizer.load(tokenizer), ar, grid)
        if manifest is not None and manifest["fingerprint"] != model.fingerprint_hex:
            raise CheckpointError(f"{Path(run) / MANIFEST}: records model "
                                  f"{manifest['fingerprint']}, but its files now make "
                                  f"{model.fingerprint_hex}: they changed after train-codec")
        return model


def model_fingerprint(tokenizer: nn.Module, prior: nn.Module) -> bytes:
    """8 bytes of sha256 over both configs and every tensor of both models (module docstring)."""
    h = hashlib.sha256(b"latentlab codec model\0")
    for part, module in (("tokenizer", tokenizer), ("prior", prior)):
        h.update(json.dumps({part: C.to_dict(module.cfg)}, sort_keys=True).encode())
        hash_tensors(h, module.state_dict())
    return h.digest()[:8]


def read_manifest(run: str | Path) -> dict:
    """The manifest of a codec run, checked for the fields `load` needs."""
    path = Path(run) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{run}: not a codec run (no {MANIFEST}); make one with "
                              "`latentlab train-codec` or give --tokenizer and --prior") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot be read ({e})") from None
    need = ("format", "tokenizer", "prior", "fingerprint")
    if not isinstance(manifest, dict) or any(k not in manifest for k in need):
        raise CheckpointError(f"{path}: not a codec manifest (needs {', '.join(need)})")
    if manifest["format"] != MANIFEST_FORMAT:
        raise CheckpointError(f"{path}: manifest format {manifest['format']}; this latentlab "
                              f"reads {MANIFEST_FORMAT}")
    return manifest


def load_prior(run: str | Path) -> tuple[ARTransformer | PixelCNN, tuple[int, int]]:
    """The autoregressive prior (ar or pixelcnn) of a generator run and the (h, w) token grid
    it models.

    Like `Generator.load`, and unlike `generation.sample.LoadedGenerator.load`, this does not
    load the tokenizer the run names: a codec run holds its own, and moving the run must not
    break it.
    """
    generator = Generator.load(run)
    what = generator.what
    if generator.family not in ("ar", "pixelcnn") or what.kind != "indices" \
            or len(what.shape) not in (1, 2):
        raise CheckpointError(f"{run}: the prior must be an autoregressive generator (family ar "
                              f"or pixelcnn) "
                              f"over 2-D token grids; this run is {generator.family} over "
                              f"{what.kind} of shape {tuple(what.shape)}")
    if len(what.shape) == 1:  # hvq: the top grid n x n, then the bottom grid 2n x 2n
        try:
            side = 2 * top_side(what.shape[0])
        except ValueError as e:
            raise CheckpointError(f"{run}: {e}") from None
        return generator.network.eval(), (side, side)
    return generator.network.eval(), (int(what.shape[0]), int(what.shape[1]))


def manifest_for(model: CodecModel, data: str) -> dict:
    """The manifest `train-codec` writes for the model it trained on dataset `data`."""
    return {"format": MANIFEST_FORMAT, "tokenizer": TOKENIZER_DIR, "prior": PRIOR_DIR,
            "fingerprint": model.fingerprint_hex, "tile": [model.channels, *model.tile],
            "grid": list(model.grid), "vocab": model.vocab, "data": data}
