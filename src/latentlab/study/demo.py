"""`latentlab demo`: the main job on the built-in digits.

For now it trains the digits KL tokenizer preset and reports held-out reconstruction against the
mean-image baseline; it grows into the full multi-recipe study.
"""

from __future__ import annotations

import time
from pathlib import Path

from latentlab.recipes.presets import TOKENIZER_PRESETS
from latentlab.recipes.train import train_tokenizer
from latentlab.training.progress import format_duration
from latentlab.training.rundir import CONFIG


def run_demo(out: str | Path = "runs/demo") -> dict:
    """Train the digits preset into `out/tokenizer` (replacing an earlier demo) and summarise."""
    out = Path(out)
    run = out / "tokenizer"
    t0 = time.perf_counter()
    mode = "overwrite" if (run / CONFIG).exists() else "new"
    metrics = train_tokenizer(TOKENIZER_PRESETS["digits-kl"], run, mode)
    test = metrics["test"]
    ratio = test["mse"] / metrics["mean_image_mse"]
    print(f"demo finished in {format_duration(time.perf_counter() - t0)}")
    print(f"  held-out digits: MSE {test['mse']:.4f} ({ratio:.1%} of the mean-image baseline "
          f"{metrics['mean_image_mse']:.4f}), PSNR {test['psnr']:.2f} dB, SSIM {test['ssim']:.3f}")
    print(f"  reconstructions: {run / 'samples' / 'reconstructions.png'}")
    print(f"  metrics:         {run / 'metrics.json'}")
    return metrics
