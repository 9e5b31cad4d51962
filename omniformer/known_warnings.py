"""Warnings every run prints and no user can act on, silenced by message (and module) only.

Nothing is silenced on import: an entry point calls :func:`silence_known_warnings` once for its
process (``omniformer-train``'s ``main`` and :func:`omniformer.train.run` do), and library code that
wants the same without touching the process's filters wraps its Lightning calls in
:func:`known_warnings_silenced`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator


def silence_known_warnings() -> None:
    """Ignore the known warnings from now on in this process; each one by message (and module where
    one is known), nothing broader."""
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
    with warnings.catch_warnings():
        silence_known_warnings()
        yield
