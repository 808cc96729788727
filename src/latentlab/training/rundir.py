"""Run directories: where a training command leaves everything it made.

    RUN/config.yaml      the resolved configuration, commented
    RUN/metrics.jsonl    one JSON record per log step: {"step": ..., "loss/recon": ...}
    RUN/tb/              TensorBoard event files of the same records
    RUN/checkpoints/     see `checkpoint.py`
    RUN/samples/         image grids written during training
Only the main process writes. A directory that already holds a run is never written into unless
the user says `resume` (continue it) or `overwrite` (replace it).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Literal

from latentlab.errors import UserError
from latentlab.io import atomic_path, write_text
from latentlab.training import distributed as D

Mode = Literal["new", "resume", "overwrite"]
CONFIG = "config.yaml"


class RunDir:
    """A run directory opened for writing (see the module docstring for its layout)."""

    def __init__(self, path: str | Path, mode: Mode = "new", writer: bool = True):
        self.path = Path(path)
        self.mode = mode
        self.writer = writer
        self._check()
        D.barrier()  # every process checks before the main one creates anything
        if writer:
            if mode == "overwrite" and self.path.exists():
                shutil.rmtree(self.path)
            for sub in ("checkpoints", "samples"):
                (self.path / sub).mkdir(parents=True, exist_ok=True)
        self._tb = None

    def _check(self) -> None:
        p = self.path
        holds_run = (p / CONFIG).exists()
        if p.exists() and not p.is_dir():
            raise UserError(f"{p}: exists and is not a directory")
        if self.mode == "new" and p.exists() and any(p.iterdir()):
            what = "already holds a run" if holds_run else "is not empty"
            raise UserError(f"{p}: {what}; pass --resume to continue it or --overwrite "
                            "to replace it")
        if self.mode == "resume" and not holds_run:
            raise UserError(f"{p}: no run to resume (no {CONFIG})")
        if self.mode == "overwrite" and p.exists() and any(p.iterdir()) and not holds_run:
            raise UserError(f"{p}: not a latentlab run directory; refusing to delete it")

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def samples(self) -> Path:
        return self.path / "samples"

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def write_config(self, text: str) -> None:
        if self.writer:
            write_text(self.config_path, text)

    def start_logging(self, step: int) -> None:
        """Open the logs at `step`, dropping records a killed run wrote after its checkpoint."""
        if not self.writer:
            return
        from torch.utils.tensorboard import SummaryWriter  # slow import: only when training

        if self.metrics_path.exists():
            kept = [line for line in self.metrics_path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= step]
            with atomic_path(self.metrics_path) as tmp:
                tmp.write_text("".join(line + "\n" for line in kept))
        # purge_step hides TensorBoard events a killed run wrote past its last checkpoint
        self._tb = SummaryWriter(str(self.path / "tb"), purge_step=step if step else None)

    def log(self, step: int, values: dict[str, float]) -> None:
        """Append one record to metrics.jsonl and TensorBoard."""
        if not self.writer:
            return
        record = {"step": step, **{k: _finite(v) for k, v in values.items()}}
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _finite(v):
    """JSON has no NaN: write non-finite floats as strings so the file stays valid JSON."""
    return v if not isinstance(v, float) or math.isfinite(v) else str(v)


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a run's metrics.jsonl."""
    lines = (Path(path) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]
