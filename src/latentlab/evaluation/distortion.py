"""Which distortion looks like the big generator's real errors?

The coupled decoder learns to undo a modelled distortion (`coupled.distortion`). Once the big
generator has trained, its real errors can be measured on the same held-out latents: its
one-step reconstruction from a partially noised latent at several t, and the endpoint error of
its probability-flow ODE from the latent to noise and back. Each option's move is compared with
the big generator's error on the same items, in the tokenizer's raw latent scale:

    norm_ratio  |move| / |big error|, mean over items (1: the right size)
    cosine      cosine similarity of move and big error, mean over items (1: the right
                direction; about 0 for noise with no structure)

onestep and gaussian are compared with the big generator's one-step error at the same t (and
noise draw), ode with the big generator's own round-trip error. And the sizes of the moves are
set beside how far the big generator's *samples* land from the data: the distance of each sample
to its nearest training latent, against the same distance for held-out real latents (the floor
a perfect generator would show).

Legend: N held-out items, D latent elements.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from einops import rearrange

from latentlab import config as C
from latentlab.data.base import EVAL_BATCH
from latentlab.recipes.coupled import LatentCoupling, round_trip
from latentlab.tokenizers.tokenizer import Tokenizer
from latentlab.training import checkpoint

TIMES = (0.1, 0.3, 0.5, 0.7, 0.9)


def _agreement(move: torch.Tensor, error: torch.Tensor) -> tuple[float, float]:
    """(mean norm ratio, mean cosine) of moves against errors, both (N, D)."""
    ratio = move.norm(dim=1) / error.norm(dim=1).clamp_min(1e-12)
    cosine = torch.nn.functional.cosine_similarity(move, error, dim=1)
    return float(ratio.mean()), float(cosine.mean())


@torch.no_grad()
def compare_distortions(coupling: LatentCoupling, big: torch.nn.Module, big_process,
                        z: torch.Tensor, scale: torch.Tensor, seed: int = 0) -> dict:
    """Every distortion option of `coupling` against the big generator's errors on z.

    Args:
        coupling: a trained coupling (its largest tiny generator, rho and standardisation).
        big: the big generator's network, called on (N, *latent) in its own normalised space.
        big_process: the big generator's process.
        z: (N, L, *S) raw eval-mode latents.
        scale: (L,) the tokenizer's latent scale (the big generator's space is z / scale).
    """
    n, std = coupling.standardize(z)
    shape = (1, -1) + (1,) * (z.ndim - 2)
    x_big = (z - z.mean(0, keepdim=True)) / scale.view(shape)  # the cache's space, centred
    flat = lambda v: rearrange(v, "b ... -> b (...)")  # noqa: E731
    g = torch.Generator().manual_seed(seed)
    out: dict = {"t": list(TIMES), "big_error_norm": [],
                 "onestep": {"norm_ratio": [], "cosine": []},
                 "gaussian": {"norm_ratio": [], "cosine": []}}
    tiny = coupling.tiny[-1]
    for t_value in TIMES:
        t = torch.full((len(z),), t_value)
        noise = torch.randn(flat(n).shape, generator=g)
        x_t = coupling.process.add_noise(flat(n), noise, t)
        tiny_error = coupling.process.x0_estimate(tiny(x_t, t, None).float(), x_t, t) - flat(n)
        xb_t = big_process.add_noise(x_big, noise.view(x_big.shape), t)
        big_hat = big_process.x0_estimate(big(xb_t, t, None).float(), xb_t, t)
        big_error = flat((big_hat - x_big) * scale.view(shape))  # raw z scale
        out["big_error_norm"].append(float(big_error.norm(dim=1).mean()))
        rho = coupling.rho_at(t)[:, None]
        onestep = flat((rho * tiny_error).view(n.shape) * std)
        gaussian_scale = tiny_error.norm(dim=1, keepdim=True) / math.sqrt(tiny_error.shape[1])
        gaussian = flat((rho * gaussian_scale * torch.randn(tiny_error.shape, generator=g))
                        .view(n.shape) * std)
        for name, move in (("onestep", onestep), ("gaussian", gaussian)):
            ratio, cosine = _agreement(move, big_error)
            out[name]["norm_ratio"].append(ratio)
            out[name]["cosine"].append(cosine)
    steps = coupling.cfg.ode_steps
    rho_ode = float(coupling.rho.pow(2).mean().sqrt())
    tiny_trip = (round_trip(coupling.process, tiny, flat(n), steps) - flat(n)).view(n.shape)

    def big_field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return big(x.view(x_big.shape), t, None).flatten(1)

    big_trip = round_trip(big_process, lambda x, t, c: big_field(x, t), flat(x_big), steps)
    big_trip_error = flat((big_trip.view(x_big.shape) - x_big) * scale.view(shape))
    ratio, cosine = _agreement(flat(rho_ode * tiny_trip * std), big_trip_error)
    out["ode"] = {"norm_ratio": ratio, "cosine": cosine, "rho": rho_ode}
    return out


@torch.no_grad()
def sample_gap(big: torch.nn.Module, big_process, train: torch.Tensor, heldout: torch.Tensor,
               scale: torch.Tensor, steps: int = 25, seed: int = 0) -> dict[str, float]:
    """Mean distance (raw latent scale) to the nearest training latent of the big generator's
    null-class samples and of held-out real latents, all (N, L, *S) in the cache's space."""
    shape = (1, -1) + (1,) * (train.ndim - 2)
    g = torch.Generator().manual_seed(seed)
    samples = big_process.sample(big, tuple(heldout.shape), steps=steps, generator=g)
    raw = lambda v: rearrange(v * scale.view(shape), "b ... -> b (...)")  # noqa: E731
    nearest = lambda v: torch.cdist(raw(v), raw(train)).min(dim=1).values.mean()  # noqa: E731
    return {"samples": float(nearest(samples)), "heldout_real": float(nearest(heldout))}


def distortion_match(tokenizer_run: Path, generator_run: Path) -> dict | None:
    """`compare_distortions` for a coupled tokenizer run (its last checkpoint's tiny generators)
    and the big generator trained on its latent; None for a run without tiny generators."""
    from latentlab.generation.generator import Generator
    from latentlab.recipes.train import (
        TokenizerRunConfig,
        build_objective,
        build_tokenizer,
        load_splits,
    )

    cfg = C.load(TokenizerRunConfig, tokenizer_run / "config.yaml")
    if not cfg.recipe.startswith("coupled"):
        return None
    data, test, prompts = load_splits(cfg)
    cfg = build_tokenizer(cfg, data.shape)
    objective = build_objective(cfg, data, test, prompts)
    if not isinstance(objective.coupling, LatentCoupling):
        return None
    found = checkpoint.latest(tokenizer_run / "checkpoints")
    if found is None:
        return None
    state = checkpoint.load(found).tensors
    objective.load_state_dict({k.removeprefix("model."): v for k, v in state.items()
                               if k.startswith("model.")}, strict=False)
    generator = Generator.load(generator_run)
    big, process = generator.network, generator.process
    tokenizer = Tokenizer.load(tokenizer_run / "tokenizer").eval()

    def latents(images: torch.Tensor) -> torch.Tensor:
        return torch.cat([tokenizer.encode(x).latent for x in images.split(EVAL_BATCH)]).float()

    z = latents(objective.heldout)
    scale = tokenizer.latent_scale.float()
    found = compare_distortions(objective.coupling.eval(), big, process, z, scale)
    train = data.__getitems__(list(range(len(data)))).x
    found["gap"] = sample_gap(big, process, tokenizer.normalize(latents(train)),
                              tokenizer.normalize(z), scale, generator.cfg.generator.steps)
    return found
