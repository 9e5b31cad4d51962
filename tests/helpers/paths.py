"""Where things are: the repository, the small fixtures it bundles, and ``../shared/data``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
SHARED_DATA = Path(os.environ.get("OMNIFORMER_SHARED_DATA", REPO.parent / "shared" / "data"))


def needs_shared_data(*parts: str):
    """Skip (with the path in the reason) unless ``../shared/data/<parts>`` exists."""
    path = SHARED_DATA.joinpath(*parts)
    return pytest.mark.skipif(not path.exists(), reason=f"shared dataset not found at {path}")
