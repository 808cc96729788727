"""`latentlab demo`: the digits study (every recipe, two seeds) at the demo budget.

Trains, for baseline, dae, coupled and coupled+dae, a digits tokenizer, the same DiT flow
generator on its latent, and scores reconstructions, latents and samples; then prints where the
report is and how each recipe's generator compares with the baseline's. The budget
(`study.presets.DEMO`) is set to finish within 10 minutes on two CPU cores.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from latentlab.study.presets import study_preset
from latentlab.study.run import STUDY, headline, run_study
from latentlab.training.progress import format_duration
from latentlab.training.rundir import CONFIG


def _earlier_demo(out: Path) -> bool:
    """Whether `out` holds a study, or the one-tokenizer demo of earlier versions."""
    if (out / STUDY).exists():
        return True
    return (out.is_dir() and {p.name for p in out.iterdir()} == {"tokenizer"}
            and (out / "tokenizer" / CONFIG).exists())


def run_demo(out: str | Path = "runs/demo") -> dict:
    """Run the demo study into `out` (replacing an earlier demo there) and summarise it."""
    out = Path(out)
    t0 = time.perf_counter()
    if _earlier_demo(out):
        shutil.rmtree(out)
    summary = run_study(study_preset("demo"), out)
    print(f"demo finished in {format_duration(time.perf_counter() - t0)}")
    print(f"  report:  {out / 'report.html'}")
    print(f"  summary: {out / 'summary.json'}")
    for line in headline(summary):
        print(f"  {line}")
    return summary
