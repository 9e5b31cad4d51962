"""Shared test helpers: config composition, CLI runs, and the location of ../shared/data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from omniformer.config import register_schemas

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
SHARED_DATA = Path(os.environ.get("OMNIFORMER_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_configure(config) -> None:
    # Importing omniformer registers nothing: whoever composes a train config registers the schemas
    # its group files list first (compose_train below; benchmarks.workloads composes one too).
    register_schemas()


def needs_shared_data(*parts: str):
    """Skip (with the path in the reason) unless ``../shared/data/<parts>`` exists."""
    path = SHARED_DATA.joinpath(*parts)
    return pytest.mark.skipif(not path.exists(), reason=f"shared dataset not found at {path}")


def compose_train(overrides: list[str] | None = None):
    """The composed ``train`` config with ``overrides``, as omniformer-train would see it."""
    register_schemas()
    with initialize_config_module("omniformer.conf", version_base="1.3"):
        return compose("train", overrides=overrides or [])


def run_cli(module: str, *args: str, cwd: Path | None = None, timeout: int = 600, check: bool = True):
    """Run ``python -m <module> <args>`` in a subprocess (1 thread); return the CompletedProcess."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd or REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        command = f"{module} {' '.join(args)}"
        output = f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        raise AssertionError(f"{command} failed ({proc.returncode}):\n{output}")
    return proc


def read_results(run_dir: Path) -> dict:
    """The ``results.json`` a training run wrote."""
    return json.loads((run_dir / "results.json").read_text())


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Tokenised-corpus cache in a per-session temp folder, never the user's home."""
    monkeypatch.setenv("OMNIFORMER_CACHE", str(tmp_path_factory.getbasetemp() / "omniformer-cache"))
