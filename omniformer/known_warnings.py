"""Warnings and notices every run prints and no user can act on, silenced by message (and module) only.

Nothing is silenced on import: an entry point calls :func:`silence_known_warnings` once for its
process (``omniformer-train``'s ``main`` and :func:`omniformer.train.run` do), and library code that
wants the same without touching the process's filters wraps its Lightning calls in
:func:`known_warnings_silenced`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator

#: Lightning's notices about settings omniformer's own config passes (``limit_*_batches=1.0``, an
#: epoch-end ``val_check_interval=1.0``), and its advertisement for another logger.
_NOTICES = re.compile(
    r"`Trainer\((limit_\w+_batches|val_check_interval)=1\.0\)` was configured so |💡 Tip: .*litlogger"
)
_LIGHTNING_NOTICES = "lightning.pytorch.utilities.rank_zero"


class _KnownNotices(logging.Filter):
    """Drops Lightning's info records matching :data:`_NOTICES`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _NOTICES.search(record.getMessage())


def _notice_filter() -> logging.Filter | None:
    """The notice filter on Lightning's logger, if one is set."""
    found = [f for f in logging.getLogger(_LIGHTNING_NOTICES).filters if isinstance(f, _KnownNotices)]
    return found[0] if found else None


def silence_known_warnings() -> None:
    """Ignore the known warnings from now on in this process; each one by message (and module where
    one is known), nothing broader. Lightning's notices about our own settings are dropped from its
    logger the same way."""
    if _notice_filter() is None:
        logging.getLogger(_LIGHTNING_NOTICES).addFilter(_KnownNotices())
    # Lightning 2.6 builds torch's deprecated LeafSpec whenever it flattens logged values.
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"lightning\.pytorch\.utilities\._pytree",
    )
    # ClassificationTask checks labels in `on_before_batch_transfer` on purpose (labels are still on
    # the host, so it costs no device sync); Lightning warns about any such hook when a data module is
    # used.
    warnings.filterwarnings(
        "ignore",
        message="You have overridden `on_before_batch_transfer` in `LightningModule` but have passed",
    )


@contextlib.contextmanager
def known_warnings_silenced() -> Iterator[None]:
    """Silence the known warnings inside the ``with`` block only (the filters are restored after)."""
    had_filter = _notice_filter() is not None
    with warnings.catch_warnings():
        silence_known_warnings()
        try:
            yield
        finally:
            if not had_filter:
                logging.getLogger(_LIGHTNING_NOTICES).removeFilter(_notice_filter())
