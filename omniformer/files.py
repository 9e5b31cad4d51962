"""Writing run outputs so a crash never leaves a half-written file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Temporary files are created private (0600); the renamed result gets the usual 0666 & ~umask.
FILE_MODE = 0o666 & ~_read_umask()


def publish_mode(fd: int) -> None:
    """Give a temporary file the permissions a plain ``open(..., "w")`` would have (POSIX)."""
    if hasattr(os, "fchmod"):
        os.fchmod(fd, FILE_MODE)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            publish_mode(handle.fileno())
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
