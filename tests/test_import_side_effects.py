"""Importing omniformer changes no process-wide state: no warning filter, no Hydra ConfigStore entry,
no umask flip. What a run needs (schemas, warning filters) its entry point sets up when it runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers.paths import REPO

MODULES = [
    "omniformer",
    "omniformer.train",
    "omniformer.tasks",
    "omniformer.config",
    "omniformer.files",
    "omniformer.tokenizers",
    "omniformer.transfer",
    "omniformer.evaluate",
    "omniformer.predict",
    "omniformer.generate",
    "omniformer.api",
    "omniformer.export",
]

# Third-party packages first (they may set filters of their own), then a snapshot, then omniformer.
SCRIPT = """
import json, os, sys, warnings
import hydra.core.config_store, lightning.pytorch, torch, torchaudio, torchmetrics, torchvision

def entries(node, path=""):
    out = set()
    for key, value in node.items():
        out |= entries(value, f"{path}/{key}") if isinstance(value, dict) else {f"{path}/{key}"}
    return out

umask_calls = []
real_umask = os.umask
os.umask = lambda mask: umask_calls.append(mask) or real_umask(mask)
store = hydra.core.config_store.ConfigStore.instance().repo
filters, stored = list(warnings.filters), entries(store)
for name in sys.argv[1:]:
    __import__(name)
print(json.dumps({
    "filters": [repr(f) for f in warnings.filters if f not in filters],
    "stored": sorted(entries(store) - stored),
    "umask_calls": umask_calls,
}))
"""


@pytest.mark.slow
def test_importing_omniformer_changes_no_filter_no_config_store_and_no_umask():
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, *MODULES], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    changed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert changed == {"filters": [], "stored": [], "umask_calls": []}


def test_the_file_mode_is_read_without_flipping_the_umask(monkeypatch):
    import os

    from omniformer import files

    mask = os.umask(0o022)
    os.umask(mask)
    files.file_mode.cache_clear()
    monkeypatch.setattr(os, "umask", lambda *_: (_ for _ in ()).throw(AssertionError("umask flipped")))
    try:
        assert files.file_mode() == 0o666 & ~mask
    finally:
        files.file_mode.cache_clear()
