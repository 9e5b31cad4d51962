"""One run per run folder: an exclusive lock held for the whole of a training run.

Two ``omniformer-train`` processes writing into one folder would interleave their checkpoints,
overwrite each other's ``.hydra/`` config and delete each other's metric rows (a resumed run trims
``logs/metrics.csv`` to its checkpoint's step). The first run takes an exclusive ``fcntl.flock`` on
``<run dir>/.run.lock`` and writes its PID, host, start time and command into it; a second run fails
at once with an error naming the folder and that holder.

The operating system releases a flock when the process holding it ends, however it ends (SIGKILL,
the OOM killer), so a crashed run never blocks its own resumption. A run that ends normally deletes
the lock file; a lock file that still names a holder while nobody holds its lock was left by a run
that died, and taking it over is logged. Processes forked by the holder (data-loader workers) close
their copy of the lock at once, so that one outliving a killed run does not keep the folder locked.

A multi-process run takes one lock, in the process that leads the launch: rank 0 of torchrun or
SLURM, or the process Lightning's DDP launcher starts the other ranks from. The ranks it starts
(``LOCAL_RANK`` > 0) write into the folder it holds without locking.

``omniformer-train`` takes the lock in a Hydra callback (:class:`RunFolderGuard`, listed in
``conf/train.yaml``) before Hydra writes ``.hydra/`` and its log file into the folder, and checks
there that the folder can be written at all; :func:`omniformer.train.train` takes it (or keeps the
callback's) for runs started from Python.

Network filesystems: NFSv4 implements flock with byte-range locks that work across hosts (hence
the host in the error); filesystems without locks get a warning and no protection.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("omniformer")

#: The lock file's name inside the run folder.
LOCK_NAME = ".run.lock"
# How long a lock whose recorded holder has ended may stay held before it is reported: a process the
# holder forked just before it died still has to close its inherited copy (see _close_in_forked_child).
ORPHAN_GRACE_SECONDS = 2.0

# Launchers' rank variables: any of them non-zero means another process leads the launch.
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK")
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class RunFolderError(RuntimeError):
    """The run folder cannot be used: it cannot be created or written, or another run holds it."""


class RunFolderBusy(RunFolderError):
    """Another run holds the run folder's lock."""


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() else None


def leads_launch() -> bool:
    """Whether this process leads its launch (always, when it is the only process)."""
    if any(_env_int(name) not in (None, 0) for name in _RANK_VARIABLES):
        return False
    slurm_tasks = _env_int("SLURM_NTASKS") or 1  # SLURM_PROCID alone is also set in one-task jobs
    return not (slurm_tasks > 1 and _env_int("SLURM_PROCID") not in (None, 0))


def prepare_run_folder(folder: str | Path) -> Path:
    """Create ``folder`` (and its parents) and check that it can be written; return it.

    Raises:
        RunFolderError: naming the folder and the reason.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunFolderError(f"cannot create the run folder {folder}: {_reason(err)}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise RunFolderError(f"the run folder {folder} is not writable (pick another hydra.run.dir)")
    return folder


def _reason(err: OSError) -> str:
    if isinstance(err, (FileExistsError, NotADirectoryError)):
        return "a file that is not a folder is in the way"
    return err.strerror or str(err)


class RunFolderLock:
    """The exclusive lock on one run folder (see the module docstring).

    Args:
        folder: the run folder; created if missing.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> RunFolderLock:
        """Take the lock, or raise :class:`RunFolderBusy` at once naming the holder; return ``self``.

        Raises:
            RunFolderError: the folder cannot be created or written.
            RunFolderBusy: another process holds the lock.
        """
        prepare_run_folder(self.folder)
        grace_ends = time.monotonic() + ORPHAN_GRACE_SECONDS
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as err:
                raise RunFolderError(
                    f"the run folder {self.folder} is not writable ({_reason(err)} for {self.path}); pick "
                    "another hydra.run.dir"
                ) from None
            try:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                if _ended_here(holder) and time.monotonic() < grace_ends:
                    # A process the ended holder forked just before it died closes its inherited copy
                    # of the lock as its first step (_close_in_forked_child): give it that moment.
                    time.sleep(0.05)
                    continue
                raise RunFolderBusy(self._busy_message(holder)) from None
            except OSError as err:
                os.close(fd)
                if err.errno not in _UNSUPPORTED:
                    raise
                log.warning(
                    "%s: this filesystem does not support file locks; a second run into this folder "
                    "would not be refused",
                    self.folder,
                )
                return self
            # A run releasing the lock deletes the file between our open and our lock: lock the new one.
            if _same_file(fd, self.path):
                break
            os.close(fd)
        previous = _read_holder(fd)
        if previous is not None:
            log.warning(
                "run folder %s: taking over the lock of %s, which ended without releasing it",
                self.folder,
                _describe(previous),
            )
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd = fd
        _OPEN.add(self)
        return self

    def release(self) -> None:
        """Delete the lock file and release the lock (no-op when not held)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):  # deleted while still held: the next run finds no stale record
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None
        _OPEN.discard(self)

    def _busy_message(self, holder: dict[str, Any] | None) -> str:
        who = _describe(holder) if holder else "a process that has not written its name yet"
        message = (
            f"run folder {self.folder} is in use by another run ({who}); wait for it to end, or give this "
            f"run another hydra.run.dir (lock file: {self.path})"
        )
        if _ended_here(holder):
            pid = holder["pid"]
            message += (
                f". PID {pid} has ended, but a process it started (a data-loader worker?) still holds the "
                "lock"
            )
        return message


def _ended_here(holder: dict[str, Any] | None) -> bool:
    """Whether ``holder`` names a process of this host that has ended."""
    if not holder or holder.get("host") != socket.gethostname():
        return False
    pid = holder.get("pid")
    return isinstance(pid, int) and not _alive(pid)


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _read_holder(fd: int) -> dict[str, Any] | None:
    """The record in the lock file, ``None`` if it is empty; unreadable content yields ``{}``."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
    except OSError:
        return {}
    if not text:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "an unknown process"
    text = f"PID {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"
    command = holder.get("command")
    return f"{text}: {command}" if command else text


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


# Locks this process holds, by resolved folder: the Hydra callback's is kept for train().
_HELD: dict[Path, RunFolderLock] = {}
# Every lock this process holds, however it was taken.
_OPEN: set[RunFolderLock] = set()


def _close_in_forked_child() -> None:
    """In a forked child: close the inherited lock descriptors (the parent's lock stays held: a flock
    lasts while any descriptor of it is open), without deleting the parent's lock file."""
    for lock in list(_OPEN):
        if lock._fd is not None:
            with contextlib.suppress(OSError):
                os.close(lock._fd)
            lock._fd = None
    _OPEN.clear()
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_forked_child)


@contextlib.contextmanager
def hold_run_folder(folder: str | Path) -> Iterator[RunFolderLock | None]:
    """Hold ``folder``'s lock for the block; yield it (``None`` in processes that do not lead their
    launch). A lock this process already holds on the folder (the Hydra callback's) is kept as it is.

    Raises:
        RunFolderError: the folder cannot be created or written.
        RunFolderBusy: another run holds it.
    """
    key = Path(folder).resolve()
    if not leads_launch():
        prepare_run_folder(key)
        yield None
        return
    if key in _HELD:
        yield _HELD[key]
        return
    lock = RunFolderLock(key).acquire()
    _HELD[key] = lock
    try:
        yield lock
    finally:
        _HELD.pop(key, None)
        lock.release()


def _release_all() -> None:
    """At exit (``sys.exit`` on a signal stop skips Hydra's end-of-run callback): leave no lock file."""
    for key in list(_HELD):
        _HELD.pop(key).release()


atexit.register(_release_all)


try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover - Hydra is a dependency; this keeps the lock usable without it
    _HydraCallback = object  # type: ignore[assignment,misc]


class RunFolderGuard(_HydraCallback):
    """Hydra callback: before Hydra writes into the run folder, check it, take its lock and refuse a
    new run into a folder that holds an earlier one (:func:`omniformer.run_folders.check_new_run`).

    ``hydra.callbacks.run_folder._target_: omniformer.run_lock.RunFolderGuard`` in ``conf/train.yaml``.
    A multirun's job folders are new by construction; there only the sweep folder is checked here
    (each job then takes its own folder's lock when it starts training).

    Hydra turns an exception raised by a callback into a warning and carries on, so a refusal prints
    its message and exits with status 1 instead.
    """

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        from omniformer.run_folders import check_new_run

        folder = Path(os.path.abspath(str(config.hydra.run.dir))).resolve()  # as Hydra's run_job does
        try:
            if leads_launch():
                if folder not in _HELD:
                    _HELD[folder] = RunFolderLock(folder).acquire()
                check_new_run(folder, config.get("ckpt_path"))  # before Hydra rewrites its .hydra/
            else:
                prepare_run_folder(folder)
        except RunFolderError as err:
            lock = _HELD.pop(folder, None)
            if lock is not None:
                lock.release()
            _refuse(err)

    def on_run_end(self, config: Any, **kwargs: Any) -> None:
        folder = Path(os.path.abspath(str(config.hydra.run.dir))).resolve()
        lock = _HELD.pop(folder, None)
        if lock is not None:
            lock.release()

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        try:
            prepare_run_folder(os.path.abspath(str(config.hydra.sweep.dir)))
        except RunFolderError as err:
            _refuse(err)


def _refuse(err: RunFolderError) -> None:
    print(f"Error: {err}", file=sys.stderr, flush=True)
    sys.exit(1)
