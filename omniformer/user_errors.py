"""User errors print one message; the traceback only on request (``HYDRA_FULL_ERROR=1``).

An error is the user's to act on when it is one of omniformer's own kinds (an invalid config, an
unusable run folder, a full disk, a non-finite loss, a ``${...}`` that cannot be resolved), a missing
file, or a
``ValueError``, ``TypeError`` or ``OSError`` raised by omniformer's own code: such a message names the
key, file or folder and what to do, and the frames above it would bury it. An error raised inside
torch, Lightning or another library keeps its traceback: that may be a bug, and the frames say where.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from hydra.errors import CompactHydraException
from omegaconf.errors import InterpolationResolutionError

from omniformer.callbacks import NonFiniteLossError
from omniformer.config import ConfigError
from omniformer.files import WriteError
from omniformer.run_lock import RunFolderError

#: Always a message for the user, wherever they are raised.
USER_ERRORS = (
    ConfigError,
    RunFolderError,
    WriteError,
    NonFiniteLossError,
    InterpolationResolutionError,
    FileNotFoundError,  # names the path it missed, wherever it was raised
)
#: A message for the user when omniformer's own code raised it.
OWN_MESSAGES = (ValueError, TypeError, OSError)
#: Hydra's switch for full tracebacks, honoured here too.
FULL_ERROR = "HYDRA_FULL_ERROR"


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is a message for the user (see the module docstring)."""
    if isinstance(err, USER_ERRORS):
        return True
    return isinstance(err, OWN_MESSAGES) and _raised_by_omniformer(err)


def _raised_by_omniformer(err: BaseException) -> bool:
    tb, last = err.__traceback__, None
    while tb is not None:
        last, tb = tb, tb.tb_next
    module = str(last.tb_frame.f_globals.get("__name__", "")) if last is not None else ""
    return module == "omniformer" or module.startswith("omniformer.")


@contextlib.contextmanager
def reported_briefly() -> Iterator[None]:
    """Inside a Hydra entry point: a user error leaves as a ``CompactHydraException`` (Hydra prints its
    message and its own ``HYDRA_FULL_ERROR=1`` hint, and exits with status 1); with
    ``HYDRA_FULL_ERROR=1`` it keeps its traceback."""
    try:
        yield
    except Exception as err:
        if not is_user_error(err) or os.environ.get(FULL_ERROR) == "1":
            raise
        raise CompactHydraException(str(err)) from None
