"""Faults the run skeleton owns: a run directory another live process writes is refused, a stale
lock is taken over, a write that fails (disk full, read-only) ends in one line with the last
checkpoint intact and `--resume` working afterwards, a run killed before its first checkpoint
resumes afresh, and what a run writes is readable by others."""

from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from latentlab import config as C
from latentlab.errors import WriteError
from latentlab.io import write_text, writing
from latentlab.training import checkpoint
from latentlab.training.lock import LOCK, RunLock
from latentlab.training.rundir import RunDir, read_metrics
from latentlab.training.skeleton import failed_writes

from .conftest import run_main, tiny_run_config

SRC = str(Path(__file__).resolve().parents[1] / "src")


def tiny_config_file(tmp_path: Path, **train) -> Path:
    """A tiny digits tokenizer run of 4 steps, checkpoints at steps 2 and 4, as a --config."""
    path = tmp_path / "tiny.yaml"
    train = dict(steps=4, checkpoint_every=2, log_every=2) | train
    path.write_text(C.dump_yaml(tiny_run_config(**train)))
    return path


def one_error_line(err: str) -> str:
    """The error line of a command's stderr (progress lines aside), asserting it is alone."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("latentlab: error:")]
    assert len(errors) == 1, err
    return errors[0]


def train_tokenizer(capsys, *argv) -> tuple[int, str, str]:
    return run_main(capsys, ["train-tokenizer", *map(str, argv)])


def dead_pid() -> int:
    """The id of a process that has exited."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    return int(child.stdout)


def test_a_run_held_by_a_live_process_is_refused_in_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    stored = C.dump_yaml(tiny_run_config())  # as a run just started by the other process
    (run / "config.yaml").write_text(stored)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from latentlab.training.lock import RunLock\n"
         "RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(60)",
         str(run)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": SRC})
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, out, err = train_tokenizer(capsys, "--out", run, "--resume")
        assert code == 2 and out == ""
        line = one_error_line(err)
        assert f"in use by process {holder.pid} on {socket.gethostname()}" in line
        # nothing was touched: the other process's files and lock are as they were
        assert (run / "config.yaml").read_text() == stored
        assert sorted(p.name for p in run.iterdir()) == ["config.yaml", LOCK]
        assert (run / LOCK).read_text().split() == [str(holder.pid), socket.gethostname()]
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_taken_over_and_said_so(tmp_path, capsys, caplog):
    run = tmp_path / "run"
    run.mkdir()
    pid = dead_pid()
    (run / LOCK).write_text(f"{pid} {socket.gethostname()}\n")
    old = os.umask(0o022)
    try:
        code, _, err = train_tokenizer(capsys, "--config", tiny_config_file(tmp_path),
                                       "--out", run)
    finally:
        os.umask(old)
    assert code == 0, err
    assert f"took over the stale lock of process {pid}" in caplog.text
    assert not (run / LOCK).exists()  # released at the end
    # and what the run wrote is readable by others: files 0644, directories 0755
    for path in [run, *run.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))


def test_a_lock_names_its_process_and_goes_at_release(tmp_path):
    lock = RunLock(tmp_path)
    lock.acquire()
    assert lock.owner() == (os.getpid(), socket.gethostname())
    lock.release()
    assert not (tmp_path / LOCK).exists()


def test_report_html_is_readable_by_others(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_text(tmp_path / "report.html", "<html></html>\n")  # as write_report does
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EROFS])
def test_a_failed_write_is_one_line_naming_the_path(tmp_path, code):
    # torch and safetensors wrap the OSError; the write names the file it was writing
    with pytest.raises(OSError) as raised, writing(tmp_path / "x"):
        raise RuntimeError("wrapped by a library") from OSError(code, os.strerror(code))
    assert (raised.value.errno, raised.value.filename) == (code, str(tmp_path / "x"))
    # and the skeleton makes it one line
    expected = rf"^{tmp_path}/x: cannot write \({os.strerror(code)}\)$"
    with pytest.raises(WriteError, match=expected), RunDir(tmp_path / "run", subdirs=()) as run, \
            failed_writes(run):
        raise raised.value
    with pytest.raises(ValueError), writing(tmp_path / "x"):  # anything else passes through
        raise ValueError("not a write failure")


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs (mounting needs root; skipped with the reason where it is refused)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    where = tmp_path / "disk"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the file system is full; returns it (delete it to free the space)."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        for chunk in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC
    return filler


def remount(disk: Path, how: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{how}", str(disk)], check=True)


@pytest.mark.parametrize("fault", ["disk full", "read-only"])
def test_a_failed_checkpoint_write_is_one_line_and_resume_finishes(
        small_disk, tmp_path, capsys, monkeypatch, fault):
    config = tiny_config_file(tmp_path)
    ref = tmp_path / "ref"
    assert train_tokenizer(capsys, "--config", config, "--out", ref)[0] == 0

    save, broken = checkpoint.save, []

    def failing_save(directory, step, *args, **kwargs):  # break the disk before step 4's
        if step == 4 and not broken:
            broken.append(fill(small_disk) if fault == "disk full" else remount(small_disk, "ro"))
        return save(directory, step, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save", failing_save)
    run = small_disk / "run"
    code, out, err = train_tokenizer(capsys, "--config", config, "--out", run)
    assert code == 2 and out == ""
    line = one_error_line(err)
    reason = "No space left on device" if fault == "disk full" else "Read-only file system"
    assert f"{run}/checkpoints/step_00000004: cannot write ({reason})" in line
    assert f"last good checkpoint: {run}/checkpoints/step_00000002" in line
    assert checkpoint.load_latest(run / "checkpoints").step == 2  # intact: checksums verified
    assert not list((run / "checkpoints").glob(".step_*"))  # no half-written checkpoint left

    if fault == "disk full":
        assert not (run / LOCK).exists()  # released
        broken[0].unlink()
    else:  # the lock could not be removed from the read-only disk: the resume takes it over
        remount(small_disk, "rw")
    code, _, err = train_tokenizer(capsys, "--out", run, "--resume")
    assert code == 0, err
    # the same weights as a run that was never interrupted
    weights = "tokenizer/tokenizer.safetensors"
    a, b = load_file(run / weights), load_file(ref / weights)
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_resume_before_the_first_checkpoint_starts_afresh(tmp_path, capsys, caplog):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(tiny_config_file(tmp_path).read_text())
    (run / "metrics.jsonl").write_text('{"step": 1, "loss/recon": 123.5}\n{"step": 2, "lo')
    code, _, err = train_tokenizer(capsys, "--out", run, "--resume")
    assert code == 0, err
    assert "no checkpoint yet" in caplog.text and "starting it afresh" in caplog.text
    records = read_metrics(run)  # the killed run's logs are gone, the torn line too
    assert records and all(r.get("loss/recon") != 123.5 for r in records)
    assert checkpoint.load_latest(run / "checkpoints").step == 4
