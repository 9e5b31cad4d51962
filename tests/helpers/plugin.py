"""The examples/video plug-in: where it lives, and dropping its modules from the import cache."""

from __future__ import annotations

import sys

from tests.helpers.paths import REPO

EXAMPLE = REPO / "examples" / "video"


def forget_plugin() -> None:
    """Drop the example's modules from the import cache (after its folder left ``sys.path``)."""
    for name in [m for m in sys.modules if m == "omniformer_video" or m.startswith("omniformer_video.")]:
        del sys.modules[name]
