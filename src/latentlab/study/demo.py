"""`latentlab demo`: the coupled recipe against the baseline on digits, three seeds each.

Trains, for baseline and coupled, a digits tokenizer, the same DiT flow generator on its latent,
and scores reconstructions, latents and 2 000 samples in every view; then prints where the
report is and the verdict on the coupled recipe's generator: better, worse or not significantly
different from the baseline's in every view, with 95 % intervals over the seeds. The budget
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
    print(f"  {len(summary['seeds'])} seeds x {summary['budgets']['samples']} samples each, "
          f"scored against the {summary['reference_split']} split; verdicts on FD∞ "
          f"(recipe / {summary['reference']}, 95 % intervals):")
    for line in headline(summary):
        print(f"  {line}")
    steps = {r: round(c["tokenizer_steps"]) for r, c in summary["seconds"].items()
             if "tokenizer_steps" in c}
    if steps:
        print("  equal training FLOPs per tokenizer: "
              + ", ".join(f"{r} {n} steps" for r, n in steps.items()))
    print("  what the coupled recipe does, and what has been measured of it: docs/coupled.md")
    return summary
