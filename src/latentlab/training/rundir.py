"""Run directories: where a training command leaves everything it made.

    RUN/config.yaml      the resolved configuration, commented
    RUN/metrics.jsonl    one JSON record per log step: {"step": ..., "loss/recon": ...}
    RUN/tb/              TensorBoard event files of the same records
    RUN/checkpoints/     see `checkpoint.py`
    RUN/samples/         image grids written during training
Only the main process writes. A directory that already holds a run is never written into unless
the user says `resume` (continue it) or `overwrite` (replace it), and never while another live
process writes it (`RUN/lock`, see `lock.py`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Literal

from latentlab.errors import UserError
from latentlab.io import atomic_path, write_text, writing
from latentlab.training import distributed as D
from latentlab.training.lock import LOCK, RunLock

log = logging.getLogger("latentlab")
Mode = Literal["new", "resume", "overwrite"]
CONFIG = "config.yaml"


class RunDir:
    """A run directory opened for writing (see the module docstring for its layout).

    The writing process holds `RUN/lock` (see `lock.py`) from here until `release()`. With
    `checkpointed`, resuming a run that stopped before its first checkpoint starts it afresh.
    """

    def __init__(self, path: str | Path, mode: Mode = "new", writer: bool = True,
                 checkpointed: bool = True, subdirs: tuple[str, ...] = ("checkpoints",
                                                                        "samples")):
        self.path = Path(path)
        self.mode = mode
        self.writer = writer
        self.lock = RunLock(self.path)
        self._created = False
        self._tb = None
        if writer:  # before anything is checked or deleted: a live run is never touched
            self._lock()
        try:
            self._check()
            if checkpointed and mode == "resume" and not (self.checkpoints / "latest").exists():
                log.warning("%s: no checkpoint yet (the run stopped before its first); "
                            "starting it afresh", self.path)
                self.mode = "overwrite"
        except BaseException:
            self.release()
            raise
        D.barrier()  # every process checks before the main one creates anything
        if writer:
            if self.mode == "overwrite":
                self._clear()
            for sub in subdirs:
                with writing(self.path / sub):
                    (self.path / sub).mkdir(parents=True, exist_ok=True)

    def _lock(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"{self.path}: exists and is not a directory")
        self._created = not self.path.exists()
        with writing(self.path):
            self.path.mkdir(parents=True, exist_ok=True)
        try:
            self.lock.acquire()
        except BaseException:
            self._remove_if_created()
            raise

    def _contents(self) -> list[Path]:
        """What the directory holds besides the lock."""
        if not self.path.is_dir():
            return []
        return [p for p in self.path.iterdir() if p.name != LOCK]

    def _check(self) -> None:
        p = self.path
        holds_run = (p / CONFIG).exists()
        if p.exists() and not p.is_dir():
            raise UserError(f"{p}: exists and is not a directory")
        if self.mode == "new" and self._contents():
            what = "already holds a run" if holds_run else "is not empty"
            raise UserError(f"{p}: {what}; pass --resume to continue it or --overwrite "
                            "to replace it")
        if self.mode == "resume" and not holds_run:
            raise UserError(f"{p}: no run to resume (no {CONFIG})")
        if self.mode == "overwrite" and self._contents() and not holds_run:
            raise UserError(f"{p}: not a latentlab run directory; refusing to delete it")

    def _clear(self) -> None:
        """Delete everything the directory holds but the lock."""
        for child in self._contents():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()

    def _remove_if_created(self) -> None:
        with contextlib.suppress(OSError):
            if self._created and not any(self.path.iterdir()):
                self.path.rmdir()

    def release(self) -> None:
        """Close the logs and give up the lock (a directory made for nothing is removed)."""
        with contextlib.suppress(OSError):  # a full disk must not hide the error it caused
            self.close()
        if self.lock.held:
            self.lock.release()
            self._remove_if_created()

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

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
                    if (found := _step_of(line)) is not None and found <= step]
            with atomic_path(self.metrics_path) as tmp:
                tmp.write_text("".join(line + "\n" for line in kept))
        # purge_step hides TensorBoard events a killed run wrote past its last checkpoint
        self._tb = SummaryWriter(str(self.path / "tb"), purge_step=step if step else None)

    def log(self, step: int, values: dict[str, float]) -> None:
        """Append one record to metrics.jsonl and TensorBoard."""
        if not self.writer:
            return
        record = {"step": step, **{k: _finite(v) for k, v in values.items()}}
        with writing(self.metrics_path), open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            with writing(self.path / "tb"):
                for k, v in values.items():
                    if isinstance(v, (int, float)) and math.isfinite(v):
                        self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def stage_mode(path: str | Path, mode: Mode) -> Mode:
    """The mode of a run inside a larger one (a codec's stage, a study's width or seed): resume
    what was started, start the rest (a parent opened with overwrite was emptied)."""
    return "resume" if mode == "resume" and (Path(path) / CONFIG).exists() else "new"


def _step_of(line: str) -> int | None:
    """The step of one metrics.jsonl line; None for a blank one or one torn by a failed write."""
    try:
        return json.loads(line).get("step", 0)
    except json.JSONDecodeError:
        return None


def _finite(v):
    """JSON has no NaN: write non-finite floats as strings so the file stays valid JSON."""
    return v if not isinstance(v, float) or math.isfinite(v) else str(v)


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a run's metrics.jsonl."""
    lines = (Path(path) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if _step_of(line) is not None]
