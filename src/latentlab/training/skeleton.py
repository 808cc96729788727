"""The skeleton every training command runs in (tokenizer, generator, codec, scaling, toy):

    with RunDir(out, mode) as run:          # RUN/lock, then the mode: new, resume or overwrite
        check that a resumed run's config.yaml describes the same experiment
        write RUN/config.yaml               # the resolved configuration, commented
        seed torch                          # the same initial weights on every rank
        result = body(run, config_text)     # the command's own part: build, train, save
        write RUN/metrics.json              # (or the command's result file)

A command is then: build its config, call `run_skeleton(cfg, out, mode, body)`. A write that
fails (disk full, permission denied) ends in one `WriteError` line naming the path and the last
good checkpoint, which is intact, so that `--resume` continues once the write can succeed.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from latentlab import config as C
from latentlab.errors import UserError, WriteError
from latentlab.io import write_errno, write_json
from latentlab.training import checkpoint
from latentlab.training.rundir import CONFIG, Mode, RunDir

log = logging.getLogger("latentlab")
Body = Callable[[RunDir, str], dict]


def check_resume(cfg: Any, stored: str | Path, skip: tuple[str, ...] = ("train.steps",)
                 ) -> None:
    """A resumed run must continue the same experiment: `cfg` must equal the config in file
    `stored` but for the fields named in `skip` (by default only its length may change)."""
    found = C.first_difference(cfg, C.load(type(cfg), stored), skip=skip)
    if found:
        raise UserError(f"--resume: {found[0]} is {found[1]!r} here but {found[2]!r} in "
                        f"{stored}")


def config_file(given: str | Path | None, out: str | Path | None, mode: Mode) -> Path | None:
    """The config file a command reads: `--config`, or when resuming without one the run's own
    config.yaml (None when there is neither: the defaults)."""
    if given:
        return Path(given)
    stored = Path(out) / CONFIG if out else None
    return stored if mode == "resume" and stored is not None and stored.exists() else None


def run_skeleton(cfg: Any, out: str | Path, mode: Mode, body: Body, *, seed: int | None = None,
                 writer: bool = True, resume_skip: tuple[str, ...] | None = ("train.steps",),
                 result: str | None = "metrics.json", **layout) -> dict:
    """Run `body` in run directory `out` (see the module docstring); returns what it returns.

    Args:
        cfg: the resolved config (a dataclass), dumped to RUN/config.yaml.
        mode: new, resume or overwrite (`RunDir`).
        body: `body(run, config_text) -> dict`, the command's training and saving.
        seed: seeds torch before `body` (None: the body seeds what it trains).
        writer: whether this process writes (the main one under torchrun).
        resume_skip: fields a resumed run may change; None skips the check (the body checks
            its parts itself).
        result: file under RUN the returned dict is written to, None for none.
        layout: `checkpointed` and `subdirs` of `RunDir`.
    """
    with RunDir(out, mode, writer=writer, **layout) as run, failed_writes(run):
        if run.mode == "resume" and resume_skip is not None:
            check_resume(cfg, run.config_path, resume_skip)
        text = C.dump_yaml(cfg)
        run.write_config(text)
        if seed is not None:
            torch.manual_seed(seed)
        metrics = body(run, text)
        if writer and result:
            write_json(run.path / result, metrics)
            log.info("wrote %s", run.path)
    return metrics


@contextlib.contextmanager
def failed_writes(run: RunDir) -> Iterator[None]:
    """A write that fails inside the run -> one `WriteError` line naming the path and, for a
    run with checkpoints, the last good one."""
    try:
        yield
    except WriteError as e:  # from a run inside this one: it has said all there is to say
        raise WriteError(f"{e}{_resume_hint(run)}") from None
    except Exception as e:
        code = write_errno(e)
        if code is None:
            raise
        path = (e.filename if isinstance(e, OSError) else None) or run.path
        raise WriteError(f"{path}: cannot write ({os.strerror(code)}){_resume_hint(run)}"
                         ) from None


def _resume_hint(run: RunDir) -> str:
    if not run.checkpoints.is_dir():
        return ""
    try:
        last = checkpoint.latest(run.checkpoints)
    except (UserError, OSError):
        last = None
    return (f"; last good checkpoint: {last or 'none'}; pass --resume once the write can "
            "succeed")
