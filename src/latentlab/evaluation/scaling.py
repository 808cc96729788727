"""Did the coupled recipe's extrapolation hold? Its predicted big-generator loss against the loss
the big generator, once trained, actually has.

During training, a coupled tokenizer scores its tiny generators on held-out latents (the first
`coupled.heldout` test items) and extrapolates their losses to the big generator's size and
training budget, per t-bin (`recipes.coupled`). Here the big generator trained on that latent is
scored on the same items by the same function (`recipes.tiny.binned_losses`: eval-mode latents,
standardised, the same t and noise draws, the null class), so predicted and actual are one
quantity. The implied rho is what the decoder should have been told: rho^2 = actual / the
largest tiny generator's held-out loss.

Legend: T t-bins, N held-out items.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from latentlab import config as C
from latentlab.data import load_dataset
from latentlab.data.base import EVAL_BATCH
from latentlab.recipes.tiny import binned_losses
from latentlab.tokenizers.tokenizer import Tokenizer


def verify_prediction(tokenizer_run: Path, generator_run: Path) -> dict | None:
    """Predicted vs actual held-out loss of the big generator per t-bin, the error, and the rho
    used against the rho implied; None for a run without a prediction (not a continuous coupled
    recipe)."""
    from latentlab.generation.generator import Generator
    from latentlab.recipes.train import TokenizerRunConfig

    record = json.loads((tokenizer_run / "metrics.json").read_text())
    predicted = record.get("predicted_big_loss")
    if not predicted or not all(math.isfinite(v) for v in predicted):
        return None
    cfg = C.load(TokenizerRunConfig, tokenizer_run / "config.yaml")
    generator = Generator.load(generator_run)
    if generator.process is None:
        return None
    tokenizer = Tokenizer.load(tokenizer_run / "tokenizer").eval()
    test = load_dataset(cfg.data.spec, "test", skip_corrupt=cfg.data.skip_corrupt)
    images = test.__getitems__(list(range(min(cfg.coupled.heldout, len(test))))).x
    with torch.no_grad():
        z = torch.cat([tokenizer.normalize(tokenizer.encode(x).latent)
                       for x in images.split(EVAL_BATCH)])  # (N, L, *S), as the cache holds
    actual = binned_losses(generator.process, generator.network, z.float(),
                           len(predicted)).tolist()
    tiny = record["heldout_tiny_losses"][-1]
    return {
        "predicted": predicted,
        "actual": actual,
        "error": [(p - a) / a for p, a in zip(predicted, actual, strict=True)],
        "tiny_largest": tiny,
        "rho": record["rho"],
        "rho_implied": [math.sqrt(min(1.0, a / t)) for a, t in zip(actual, tiny, strict=True)],
        "big_parameters": record["big_parameters"],
        "big_samples": record["big_samples"],
        "tiny_network": record.get("tiny_network"),
        "heldout_items": len(images),
    }


def scaling_figures(found: dict | None) -> dict[str, float]:
    """A verification as flat figures: predicted/actual/error/rho/rho_implied per t-bin and the
    mean absolute error, keyed like `error_t0`."""
    if not found:
        return {}
    out = {"abs_error": sum(abs(e) for e in found["error"]) / len(found["error"]),
           "predicted_mean": sum(found["predicted"]) / len(found["predicted"]),
           "actual_mean": sum(found["actual"]) / len(found["actual"])}
    for key in ("predicted", "actual", "error", "rho", "rho_implied"):
        out |= {f"{key}_t{b}": float(v) for b, v in enumerate(found[key])}
    return out
