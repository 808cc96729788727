"""Atomic file writes: a reader never sees a half-written file, a crash leaves the old one.

A write that fails for a reason the user fixes (disk full, permission denied, read-only file
system) raises a plain `OSError` with that errno and the path, whatever library did the writing
(`training.skeleton` turns it into a one-line `WriteError`). Written files get the modes the
umask gives (0644 under the usual 022), not the 0600 of a bare `tempfile.mkstemp`.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG}
"""Write failures the user can fix: disk full, quota, permissions, read-only, file too big."""


def write_errno(e: BaseException | None) -> int | None:
    """The errno of a write failure in `e` or the exceptions it chains, or None.

    torch.save reports a failed write as a RuntimeError whose context is the OSError, and
    safetensors as a SafetensorError that quotes it ("... (os error 28)").
    """
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        code = e.errno if isinstance(e, OSError) else None
        if code is None:
            found = re.search(r"os error (\d+)", str(e))
            code = int(found.group(1)) if found else None
        if code in WRITE_ERRNOS:
            return code
        e = e.__cause__ or e.__context__
    return None


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Re-raise a write failure the user can fix as `OSError(errno, reason, path)`: it names
    `path`, not a temporary file, and chains nothing (torch and safetensors wrap it)."""
    try:
        yield
    except Exception as e:
        code = write_errno(e)
        if code is None:
            raise
        raise OSError(code, os.strerror(code), str(path)) from None


@functools.cache
def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def readable(path: str | os.PathLike, directory: bool = False) -> None:
    """Give `path` (made by mkstemp or mkdtemp, 0600/0700) the modes the umask allows."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`.

    The temporary file lives in the same directory so that the final `os.replace` is an atomic
    rename on the same file system. On error it is removed and `path` is left untouched.
    """
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp)
        try:
            yield tmp
            readable(tmp)  # after the writer: some (safetensors) recreate the file as 0600
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; on success it replaces `path` (an older one is
    removed only after the new one is complete). On error it is removed, `path` untouched."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            yield tmp
            readable(tmp, directory=True)
            old = None
            if path.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old",
                                            dir=path.parent))
                os.replace(path, old / path.name)
            os.rename(tmp, path)
            if old is not None:
                shutil.rmtree(old)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj: object) -> Path:
    """Write `obj` as indented JSON to `path` atomically."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
