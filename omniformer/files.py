"""Writing run outputs so a crash never leaves a half-written file.

Every file is written to a temporary file in the same folder, flushed to disk (``fsync``) and
renamed over its target (``os.replace`` is atomic), then the folder is synced so the rename itself
survives a power cut. A process killed at any moment leaves the old file or the new one.

A write that fails (a full disk, a quota, a read-only folder) removes its temporary file and raises
:class:`WriteError`, one sentence naming the file and saying that its previous version is intact;
``torch.save`` on a full disk would otherwise end in its zip writer's "unexpected pos" error.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


class WriteError(OSError):
    """A file could not be written (full disk, read-only folder...); its previous version is intact.

    ``errno`` is the underlying error's; the message names the file.
    """

    def __str__(self) -> str:
        return str(self.strerror)


_REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def _read_umask() -> int:
    """The process's umask, read without changing it where the system reports it."""
    # os.umask can only read the mask by setting it, and another thread creating a file in between
    # would get the wrong permissions; Linux (4.7+) reports it in /proc, so the flip is the fallback.
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


@functools.cache
def file_mode() -> int:
    """The permissions a plain ``open(..., "w")`` gives a new file: ``0o666`` less the umask (read
    once, at the first write)."""
    return 0o666 & ~_read_umask()


def publish_mode(fd: int) -> None:
    """Give a temporary file (created private, 0600) the permissions a plain ``open(..., "w")`` would
    have (POSIX)."""
    if hasattr(os, "fchmod"):
        os.fchmod(fd, file_mode())


def _os_error(err: BaseException) -> OSError | None:
    """The OS error behind ``err``: itself, or one it was raised from or while handling."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _write_error(err: BaseException, path: Path, what: str) -> WriteError | None:
    """``err`` as a :class:`WriteError` naming ``path``; ``None`` when no OS error is behind it."""
    cause = _os_error(err) if isinstance(err, Exception) else None
    if cause is None:
        return None
    reason = _REASONS.get(cause.errno) or cause.strerror or str(cause)
    kept = f"the previous {what} {path} is intact" if path.is_file() else f"no earlier {path.name} existed"
    return WriteError(cause.errno, f"{reason} while writing {path}; {kept}")


@contextlib.contextmanager
def _replacing(path: Path, what: str, mode: str) -> Iterator[IO]:
    """A handle on a temporary file beside ``path`` that replaces ``path`` when the block ends.

    Raises:
        WriteError: the file could not be written; the temporary is gone, ``path`` untouched.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise _write_error(err, path, what) from None
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
            handle.flush()
            publish_mode(handle.fileno())
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        failure = _write_error(err, path, what)
        if failure is None:
            raise
        # The sentence says it all; torch's zip-writer error and its traceback would bury it.
        raise failure from None
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path``.

    Raises:
        WriteError: ``path`` could not be written (its previous version is intact).
    """
    with _replacing(Path(path), "version of", "w") as handle:
        handle.write(text)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def stale_temporaries(path: str | Path) -> list[Path]:
    """Temporary files a killed save of ``path`` may have left beside it."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.*.tmp")) if path.parent.is_dir() else []


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)`` through a synced temporary file in the same folder and a rename.

    Raises:
        WriteError: ``path`` could not be written (the previous checkpoint there is intact).
    """
    path = Path(path)
    for stale in stale_temporaries(path):  # left by a save that was killed
        stale.unlink(missing_ok=True)
    import torch  # here, so that writing text files does not need it

    with _replacing(path, "checkpoint", "wb") as handle:
        torch.save(obj, handle)


def write_json(path: str | Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
