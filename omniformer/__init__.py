"""omniformer: one shared transformer backbone for text, images and audio.

The Python API (loaded on first use, so that ``import omniformer`` stays light):

- :func:`omniformer.load` — a trained model from a model folder or a checkpoint, with ``predict``
  (classifiers) and ``generate`` (language models);
- :func:`omniformer.fit` — train as ``omniformer-train`` does; returns the results and the run folder;
- :class:`omniformer.Model` — what ``load`` returns.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Model", "fit", "load"]

_LAZY = {"load": "omniformer.api", "fit": "omniformer.api", "Model": "omniformer.inference"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'omniformer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
