"""Seeds made from other seeds, and code run under a seed without moving the caller's random streams.

Every seeded stream in omniformer (sample augmentations, per-step seeds, language-model windows, the
multi-task schedule, audio length buckets) derives its seeds here, so that a result depends on the
run's seed and a position, never on what ran before.
"""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch
from torch.utils.data import get_worker_info

_MASK = 2**63 - 1
#: The prime both mixes multiply by.
_PRIME = 1_000_003


def mix_seed(*parts: int) -> int:
    """One 63-bit seed from several integers (a simple polynomial hash; distinct inputs stay distinct)."""
    seed = 0
    for part in parts:
        seed = (seed * _PRIME + int(part) + 1) & _MASK
    return seed


def stream_seed(seed: int, index: int) -> int:
    """Seed of element ``index`` (a batch, an epoch) of the stream seeded by ``seed``: ``seed·1000003+index``.

    An older mix than :func:`mix_seed`, kept where it has always been used (language-model windows,
    the multi-task schedule, audio length buckets): changing it would change every seeded result.
    """
    return seed * _PRIME + index


def seed_all(seed: int) -> None:
    """Seed torch's CPU generator, ``random`` and NumPy's global generator with ``seed``.

    ``torch.default_generator.manual_seed`` rather than ``torch.manual_seed``: the latter also
    queues CUDA seeding and costs ~100x more, which matters when it runs once per sample.
    """
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


@contextlib.contextmanager
def preserved_rng():
    """Restore the torch (CPU), ``random`` and NumPy generator states when the block ends.

    In the main process this keeps sample loading from moving the training step's random stream. In
    a loader worker process nothing else draws from those generators (every sample is seeded anew),
    so the save/restore (~80 µs, mostly NumPy's) is skipped.
    """
    if get_worker_info() is not None:
        yield
        return
    torch_state, py_state, np_state = (
        torch.default_generator.get_state(),
        random.getstate(),
        np.random.get_state(),
    )
    try:
        yield
    finally:
        torch.default_generator.set_state(torch_state)
        random.setstate(py_state)
        np.random.set_state(np_state)


@contextlib.contextmanager
def seeded_rng(seed: int):
    """Run a block under ``seed`` for torch (CPU), ``random`` and NumPy, then restore their states
    (see :func:`preserved_rng`)."""
    with preserved_rng():
        seed_all(seed)
        yield
