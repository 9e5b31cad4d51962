"""Running omniformer the ways tests do: training composed in process (``omniformer.train.run``), a
console entry point's ``main()`` in process, or the entry point as its own Python process."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig

from omniformer.config import register_schemas
from tests.helpers.paths import REPO


def compose_train(overrides: list[str] | None = None):
    """The composed ``train`` config with ``overrides``, as omniformer-train would see it."""
    if "_schema.yaml" not in ConfigStore.instance().repo.get("model", {}):  # a tenth of a compose's time
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


def copy_run(run_dir: Path, to: Path) -> Path:
    """A private copy of a (shared, session-scoped) run folder, for a test that resumes or edits it."""
    shutil.copytree(run_dir, to, dirs_exist_ok=True)
    return to


def run_main(module: str, *args: str, cwd: Path | None = None, check: bool = True):
    """Run ``<module>.main()`` in this process as ``python -m <module> <args>`` would run it, and return
    what :func:`run_cli` returns (exit status, stdout, stderr) without starting Python (seconds each)."""
    out, err = io.StringIO(), io.StringIO()
    argv, here, code = sys.argv, os.getcwd(), 0
    # Hydra keeps the last job's config in a process-wide singleton (`${hydra:...}` resolves through it;
    # `--help` and `--cfg` leave one without a run folder): a fresh process would not see it.
    hydra_config = HydraConfig.instance().cfg
    try:
        sys.argv = [module, *args]
        os.chdir(cwd or REPO)
        with logging_kept(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            importlib.import_module(module).main()
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
    finally:
        sys.argv = argv
        os.chdir(here)
        HydraConfig.instance().cfg = hydra_config
    proc = subprocess.CompletedProcess([module, *args], code, out.getvalue(), err.getvalue())
    if check and code != 0:
        command = f"{module} {' '.join(args)}"
        raise AssertionError(f"{command} failed ({code}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@contextlib.contextmanager
def logging_kept():
    """Undo, on exit, what Hydra's logging setup (an in-process entry point's ``main()``) does: its
    handlers on the root logger, the root level, and the loggers it disables (``job_logging:
    disabled`` disables every existing one, and a later ``caplog`` would see none of omniformer's
    warnings). pytest's own handlers are left alone."""
    root, known = logging.getLogger(), logging.Logger.manager.loggerDict
    handlers, level = list(root.handlers), root.level
    disabled = {name: lg.disabled for name, lg in known.items() if isinstance(lg, logging.Logger)}
    try:
        yield
    finally:
        root.setLevel(level)
        for name, was in disabled.items():
            known[name].disabled = was
        for handler in [h for h in root.handlers if h not in handlers]:
            if not type(handler).__module__.startswith("_pytest"):
                root.removeHandler(handler)
                handler.close()
