"""RUN/lock: which process writes a run directory, so that two never write into one.

The file holds "PID HOST" of its owner. A lock whose process is gone (same host, no such pid) is
stale: the next process takes it over and says so. A lock of a live process, or of another host
(whose processes cannot be checked from here), refuses the run in one line. The owner removes
the file when it is done, and at interpreter exit at the latest.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
from pathlib import Path

from latentlab.errors import UserError

log = logging.getLogger("latentlab")
LOCK = "lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class RunLock:
    """The lock of one run directory (see the module docstring)."""

    def __init__(self, directory: str | Path):
        self.path = Path(directory) / LOCK
        self.me = (os.getpid(), socket.gethostname())
        self.held = False

    def owner(self) -> tuple[int, str] | None:
        """(pid, host) named in the lock file, or None when there is none or it is unreadable."""
        try:
            pid, host = self.path.read_text().split()
            return int(pid), host
        except (OSError, ValueError):
            return None

    def acquire(self) -> None:
        """Take the lock, taking over a stale one; UserError when a live process holds it."""
        for _ in range(3):  # another process may take a stale lock at the same moment
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{self.me[0]} {self.me[1]}\n")
            self.held = True
            atexit.register(self.release)
            return
        raise UserError(f"{self.path.parent}: could not take {self.path}; another process is "
                        "starting a run there")

    def _take_over_if_stale(self) -> None:
        owner = self.owner()
        if owner is None:
            raise UserError(f"{self.path}: unreadable lock; if no process writes "
                            f"{self.path.parent}, delete it")
        pid, host = owner
        if owner == self.me:  # this process already writes the run (e.g. a stage of it)
            self.path.unlink(missing_ok=True)
            return
        if host != self.me[1] or _alive(pid):
            raise UserError(f"{self.path.parent}: in use by process {pid} on {host} (see "
                            f"{self.path}); wait for it to finish or stop it")
        log.warning("%s: took over the stale lock of process %d on %s (no longer running)",
                    self.path.parent, pid, host)
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock file if this process holds it."""
        if self.held and self.owner() == self.me:
            with contextlib.suppress(OSError):  # read-only by now: left stale, taken over later
                self.path.unlink(missing_ok=True)
        self.held = False
        atexit.unregister(self.release)
