"""Fixtures shared by the test modules: one torch thread, an isolated tokenised-corpus cache, logging
as pytest set it up, and tiny trained runs made once per session.

The helpers tests import live in ``tests/helpers/``; test modules import them from there, never
from one another or from this file.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.helpers.overrides import AUDIO, FSDD_FIXTURE_DATA, IMAGE, LM, MNIST_FIXTURE_DATA
from tests.helpers.paths import FIXTURES

# One intra-op thread, here and in every process the tests start (CLI runs, DDP ranks): the tensors are
# tiny, and on a busy 2-core machine a second OpenMP thread waiting for the other core made a 60-step
# overfit 25 times slower (9 s against 0.4 s). An OMP_NUM_THREADS set by the caller is kept.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# torch, Lightning and omniformer are imported where tests run, not at the top of this file: the
# pytest-xdist controller, which only hands tests to its workers, then starts in a second, not ten.


def _runs_tests(config: pytest.Config) -> bool:
    """False in pytest-xdist's controller (``-n N``), true in its workers and in a serial run."""
    controller = bool(config.getoption("numprocesses", None)) or config.getoption("dist", "no") != "no"
    return hasattr(config, "workerinput") or not controller


def pytest_configure(config: pytest.Config) -> None:
    if not _runs_tests(config):
        return
    import torch

    from omniformer.config import register_schemas

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    # Importing omniformer registers nothing: whoever composes a train config registers the schemas
    # its group files list first (compose_train does; benchmarks.workloads composes one too).
    register_schemas()


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Tokenised-corpus cache in a per-session temp folder, never the user's home (session-wide, so
    that the session fixtures below use it too)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMNIFORMER_CACHE", str(tmp_path_factory.getbasetemp() / "omniformer-cache"))
        yield


@pytest.fixture(autouse=True)
def _logging_as_pytest_set_it_up():
    """Undo what an in-process omniformer-eval, -generate or -predict (``main()``) does to logging."""
    from tests.helpers.runs import logging_kept

    with logging_kept():
        yield


@pytest.fixture(params=["in-process", pytest.param("subprocess", marks=pytest.mark.slow)])
def entry_point(request):
    """Runs a console entry point, ``entry_point("omniformer.generate", "ckpt=...", check=False)``:
    its ``main()`` in this process (seconds), and, in the slow set, as its own Python process as
    well; both return the CompletedProcess (exit status, stdout, stderr).

    One test per console command asks for it (train, generate, predict, export; a plug-in's train and
    its eval with the plug-in flag); the other command-line tests call ``tests.helpers.runs.run_main``
    alone, the same ``main()`` without a Python start-up per test."""
    from tests.helpers.runs import run_cli, run_main

    return run_main if request.param == "in-process" else run_cli


# -- tiny trained runs, one per session ----------------------------------------------------------------
# Shared by every test that asks: read them, never write into them. A test that resumes a run or edits
# its files works on a copy (tests.helpers.runs.copy_run into its tmp_path).
@pytest.fixture(scope="session")
def tiny_lm_run(tmp_path_factory) -> Path:
    """A tiny BPE language model (``tests.helpers.overrides.LM``) trained in process for 3 steps: its
    run folder, with ``checkpoints/last.ckpt`` at step 3 and ``vocab.json``."""
    run_dir = tmp_path_factory.mktemp("tiny_lm")
    from omniformer.train import run

    run([*LM, "trainer.max_steps=3"], run_dir)
    return run_dir


@pytest.fixture(scope="session")
def tiny_lm_checkpoint(tiny_lm_run) -> Path:
    """``last.ckpt`` of :func:`tiny_lm_run` (step 3)."""
    return tiny_lm_run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def tiny_mnist_run(tmp_path_factory) -> Path:
    """A tiny ViT trained in process on the 16 bundled MNIST training digits (3 epochs of 2 batches,
    then a test pass): its run folder."""
    run_dir = tmp_path_factory.mktemp("tiny_mnist")
    overrides = ["data.batch_size=8", "data.eval_batch_size=8", "data.num_workers=0", "trainer.max_epochs=3"]
    from omniformer.train import run

    run([*IMAGE, *MNIST_FIXTURE_DATA, *overrides], run_dir)
    return run_dir


@pytest.fixture(scope="session")
def tiny_fsdd_run(tmp_path_factory) -> Path:
    """A tiny audio classifier trained in process on the bundled FSDD recordings (2 epochs of one
    batch, then a test pass): its run folder."""
    run_dir = tmp_path_factory.mktemp("tiny_fsdd")
    from omniformer.train import run

    run([*AUDIO, *FSDD_FIXTURE_DATA, "data.batch_size=2", "trainer.max_epochs=2"], run_dir)
    return run_dir


@pytest.fixture(scope="session")
def two_speakers(tmp_path_factory) -> Path:
    """An FSDD folder (``recordings/``) with two speakers' bundled clips: theo (digits 0-1, takes 0, 5,
    6) and nicolas (digits 1-2, takes 3, 5-7). Read it, never write into it."""
    folder = tmp_path_factory.mktemp("fsdd_two_speakers") / "recordings"
    folder.mkdir()
    for source in ("fsdd", "fsdd_nicolas"):
        for path in (FIXTURES / source / "recordings").glob("*.wav"):
            shutil.copy(path, folder)
    return folder.parent
