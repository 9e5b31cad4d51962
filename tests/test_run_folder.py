"""The run folder: one run at a time, a copied or moved folder resumes from its own latest checkpoint,
a full disk or unwritable folder is named in one sentence, a stop by signal keeps the saved step's
log row, and a checkpoint of another kind of task is refused before the data is read.

Runs are in-process (``omniformer.train.run``) on the tiny language model (tests.helpers.overrides.LM),
except where the command line's own behaviour is the point (what Hydra does before training starts,
what a user sees on stderr).
"""

from __future__ import annotations

import csv
import errno
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from omniformer.checkpoint import load_checkpoint
from omniformer.files import WriteError, atomic_torch_save, atomic_write_text, stale_temporaries
from omniformer.run_folders import RunFolderUsed
from omniformer.run_lock import LOCK_NAME, RunFolderBusy, RunFolderError, RunFolderLock, hold_run_folder
from omniformer.signals import StopRequested
from omniformer.train import run
from tests.helpers.callbacks import (
    DiskFullHandle,
    disk_full_at_start,
    fill_the_disk,
    losses,
    record,
    signal_at,
)
from tests.helpers.data import image_folder
from tests.helpers.overrides import LM, image_args, replace
from tests.helpers.paths import REPO
from tests.helpers.runs import copy_run, read_results, run_cli, run_main

SHORT = replace(LM, "trainer.max_steps=5", "trainer.val_check_interval=5")


# -- one run per folder ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_second_run_into_a_busy_folder_fails_at_once_naming_the_folder_and_the_holder(tmp_path):
    folder = tmp_path / "run"
    first = RunFolderLock(folder).acquire()  # what a running omniformer-train holds
    try:
        with pytest.raises(RunFolderBusy) as caught:
            run(SHORT, folder)
        message = str(caught.value)
        assert f"run folder {folder} is in use by another run (PID {os.getpid()} on " in message
        assert "give this run another hydra.run.dir" in message
        assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME]  # nothing written, nothing read
    finally:
        first.release()
    assert not (folder / LOCK_NAME).exists()
    run(SHORT, folder)  # free again
    assert read_results(folder)["steps"] == 5
    assert not (folder / LOCK_NAME).exists()  # a finished run leaves no lock file


@pytest.mark.slow
def test_the_cli_refuses_a_busy_folder_before_hydra_writes_into_it(tmp_path):
    folder = tmp_path / "run"
    first = RunFolderLock(folder).acquire()
    try:
        proc = run_main("omniformer.train", *SHORT, f"hydra.run.dir={folder}", check=False)
    finally:
        first.release()
    assert proc.returncode == 1
    assert f"run folder {folder} is in use by another run (PID {os.getpid()} on " in proc.stderr
    assert "Traceback" not in proc.stderr
    # Hydra neither rewrote .hydra/ nor appended to the log of the run that holds the folder
    assert not (folder / ".hydra").exists() and not (folder / "train.log").exists()


@pytest.mark.slow
def test_a_lock_left_by_a_killed_run_is_taken_over_with_a_log_line(tmp_path, caplog):
    folder = tmp_path / "run"
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, signal, sys; from omniformer.run_lock import RunFolderLock; "
            "RunFolderLock(sys.argv[1]).acquire(); print(os.getpid(), flush=True); "
            "os.kill(os.getpid(), signal.SIGKILL)",
            str(folder),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    pid = int(killed.stdout.split()[0])
    assert str(pid) in (folder / LOCK_NAME).read_text()  # the dead run's record is still there
    with caplog.at_level("WARNING", logger="omniformer"):
        run(SHORT, folder)
    assert f"taking over the lock of PID {pid} on " in caplog.text
    assert "which ended without releasing it" in caplog.text
    assert read_results(folder)["steps"] == 5 and not (folder / LOCK_NAME).exists()


def test_a_process_forked_by_a_killed_run_does_not_keep_the_folder_locked(tmp_path):
    """A data-loader worker forked by the run outlives it for a few seconds; it must not hold the lock."""
    folder = tmp_path / "run"
    script = (
        "import os, signal, sys, time; from omniformer.run_lock import RunFolderLock; "
        "RunFolderLock(sys.argv[1]).acquire(); child = os.fork(); "
        "time.sleep(120) if child == 0 else (print(child, flush=True), os.kill(os.getpid(), signal.SIGKILL))"
    )
    killed = subprocess.Popen(
        [sys.executable, "-c", script, str(folder)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    child = int(killed.stdout.readline())  # not read to the end: the forked child keeps the pipe open
    assert killed.wait(timeout=60) == -signal.SIGKILL
    try:
        os.kill(child, 0)  # the forked process is still running
        RunFolderLock(folder).acquire().release()
    finally:
        os.kill(child, signal.SIGKILL)
        killed.stdout.close()


def test_processes_started_by_a_launch_do_not_take_the_lock(tmp_path, monkeypatch):
    """Lightning's DDP launcher starts ranks 1.. with LOCAL_RANK set, torchrun sets RANK, SLURM sets
    SLURM_PROCID: they write into the folder the launching process holds, and must not refuse it."""
    folder = tmp_path / "run"
    leader = RunFolderLock(folder).acquire()
    try:
        for name, value in (("LOCAL_RANK", "1"), ("RANK", "3"), ("NODE_RANK", "1")):
            with monkeypatch.context() as env:
                env.setenv(name, value)
                with hold_run_folder(folder) as held:
                    assert held is None
        with monkeypatch.context() as env:
            env.setenv("SLURM_PROCID", "2")
            env.setenv("SLURM_NTASKS", "4")
            with hold_run_folder(folder) as held:
                assert held is None
        with monkeypatch.context() as env:
            env.setenv("LOCAL_RANK", "0")  # the launching process itself, after it started the others
            with pytest.raises(RunFolderBusy), hold_run_folder(folder):
                pass
    finally:
        leader.release()


# -- a copied or moved run folder ------------------------------------------------------------------------
@pytest.mark.slow
def test_a_copied_run_folder_resumes_from_its_own_latest_checkpoint(tmp_path, caplog):
    first, copy = tmp_path / "a", tmp_path / "b"
    run([*LM, "trainer.max_steps=5"], first)
    shutil.copytree(first, copy)
    with caplog.at_level("WARNING"):
        run([*LM, "trainer.max_steps=10", "ckpt_path=last"], copy)
        run([*LM, "trainer.max_steps=15", "ckpt_path=last", *record(tmp_path / "third.jsonl")], copy)
    assert read_results(copy)["resumed_at_step"] == 10  # not 5: the copy's own last.ckpt
    assert sorted(losses(tmp_path / "third.jsonl")) == list(range(11, 16))
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    state = load_checkpoint(copy / "checkpoints" / "last.ckpt")
    assert state["global_step"] == 15
    (record_state,) = [v for k, v in state["callbacks"].items() if k.startswith("RunCheckpoint")]
    assert Path(record_state["best_model_path"]).parent == copy / "checkpoints"  # not the original's
    assert record_state["best_model_score"] is not None  # the best-so-far record carried over
    assert "taking over the lock" not in caplog.text  # finished runs released it
    assert sorted(p.name for p in (first / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


@pytest.mark.slow
def test_a_new_run_into_a_folder_holding_a_run_is_refused_and_ckpt_path_continues_it(tiny_lm_run, tmp_path):
    copy_run(tiny_lm_run, tmp_path)  # a finished 3-step run
    with pytest.raises(RunFolderUsed) as caught:
        run([*LM, "trainer.max_steps=4"], tmp_path)  # no ckpt_path: a new run, same folder
    assert str(caught.value) == (
        f"run folder {tmp_path.resolve()} already holds a run (checkpoints/, logs/, results.json); a new "
        "run there would mix its files with the old ones. Continue that run with ckpt_path=last, or start "
        "a new run in a fresh folder: leave hydra.run.dir unset (a new timestamped folder each run) or "
        "give another hydra.run.dir"
    )
    assert load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 3  # untouched
    assert run([*LM, "trainer.max_steps=4", "ckpt_path=last"], tmp_path)["resumed_at_step"] == 3
    assert run([*LM, "trainer.max_steps=5", "ckpt_path=auto"], tmp_path)["resumed_at_step"] == 4
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


@pytest.mark.slow
def test_the_cli_refuses_a_used_folder_before_hydra_rewrites_its_config(tmp_path):
    run_main("omniformer.train", *SHORT, f"hydra.run.dir={tmp_path}")
    overrides = (tmp_path / ".hydra" / "overrides.yaml").read_text()
    proc = run_main("omniformer.train", *SHORT, "seed=7", f"hydra.run.dir={tmp_path}", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"run folder {tmp_path} already holds a run (checkpoints/, logs/, results.json)" in proc.stderr
    assert "Continue that run with ckpt_path=last" in proc.stderr
    assert (tmp_path / ".hydra" / "overrides.yaml").read_text() == overrides  # the first run's, kept
    assert not (tmp_path / ".run.lock").exists()


# -- a full disk, an unwritable folder -------------------------------------------------------------------
@pytest.mark.slow
def test_a_full_disk_names_the_file_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    last = tmp_path / "checkpoints" / "last.ckpt"
    run([*LM, "trainer.max_steps=4"], tmp_path)
    fill_the_disk(monkeypatch)
    with pytest.raises(WriteError) as caught:
        run([*LM, "trainer.max_steps=8", "ckpt_path=last"], tmp_path)  # next save: last.ckpt at step 6
    assert str(caught.value) == (
        f"no space left on device while writing {last}; the previous checkpoint {last} is intact"
    )
    assert caught.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert load_checkpoint(last)["global_step"] == 4
    assert stale_temporaries(last) == [] and not list((tmp_path / "checkpoints").glob("*.tmp"))


@pytest.mark.slow
def test_a_full_disk_is_one_sentence_on_the_command_line(tmp_path):
    folder = tmp_path / "run"
    full = disk_full_at_start()
    proc = run_cli("omniformer.train", *SHORT, *full, f"hydra.run.dir={folder}", check=False)
    assert proc.returncode == 1
    last = folder / "checkpoints" / "last.ckpt"
    assert f"no space left on device while writing {last}; no earlier last.ckpt existed" in proc.stderr
    assert "Traceback" not in proc.stderr and "unexpected pos" not in proc.stderr
    assert not list((folder / "checkpoints").glob("*.tmp"))


@pytest.mark.parametrize("write", [atomic_write_text, atomic_torch_save], ids=["text", "torch"])
def test_a_write_that_fails_part_way_removes_its_temporary(tmp_path, monkeypatch, write):
    target = tmp_path / "out.json"
    atomic_write_text(target, "old")
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: DiskFullHandle(real_fdopen(fd, *a, **k), 2))
    with pytest.raises(WriteError, match=rf"no space left on device while writing {target}; the previous"):
        if write is atomic_write_text:
            write(target, "a longer text")
        else:
            write({"w": torch.ones(4)}, target)
    monkeypatch.undo()
    assert target.read_text() == "old" and stale_temporaries(target) == []


@pytest.mark.slow
def test_a_run_folder_that_cannot_be_created_is_named_before_hydra_starts(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    folder = tmp_path / "file" / "run"
    proc = run_main("omniformer.train", *SHORT, f"hydra.run.dir={folder}", check=False)
    assert proc.returncode == 1
    assert f"cannot create the run folder {folder}" in proc.stderr
    assert "Traceback" not in proc.stderr
    with pytest.raises(RunFolderError, match=f"cannot create the run folder {folder}"):
        run(SHORT, folder)


def without_root_privileges() -> list[str]:
    """A command prefix under which file permissions apply to this user: none for a normal user; for
    root, ``setpriv`` without the capabilities that let root write anywhere (root stays the owner)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a chmod-ed folder would still be writable")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]


@pytest.mark.slow
def test_a_read_only_run_folder_is_named_before_hydra_sets_up_its_log(tmp_path):
    """A real unwritable folder (mode 0555, and root's override capabilities dropped): Hydra's log file
    would fail in its logging setup with a message that names no path."""
    folder = tmp_path / "run"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        command = [sys.executable, "-m", "omniformer.train", *SHORT, f"hydra.run.dir={folder}"]
        proc = subprocess.run(
            [*without_root_privileges(), *command],
            cwd=REPO,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        folder.chmod(0o755)
    assert proc.returncode == 1
    assert f"the run folder {folder} is not writable" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Unable to configure handler" not in proc.stderr


# -- a stop by signal keeps the saved step's row ---------------------------------------------------------
def csv_steps(folder: Path) -> list[int]:
    """The steps of the training-loss rows of ``logs/metrics.csv``, in file order."""
    with open(folder / "logs" / "metrics.csv", newline="") as handle:
        return [int(row["step"]) for row in csv.DictReader(handle) if row.get("train_loss")]


@pytest.mark.slow
@pytest.mark.parametrize("every", [1, 3])
def test_a_sigterm_keeps_the_saved_steps_loss_row_and_the_resume_continues_after_it(tmp_path, every):
    args = [
        *LM,
        "trainer.max_steps=8",
        f"trainer.log_every_n_steps={every}",
        "callbacks.checkpoint.every_n_train_steps=null",
    ]
    sigterm = signal_at(4, "SIGTERM", marker=tmp_path / "signalled")
    with pytest.raises(StopRequested) as caught:
        run([*args, *sigterm], tmp_path / "run")
    assert caught.value.step == 5 and load_checkpoint(caught.value.checkpoint)["global_step"] == 5
    logged = [s for s in range(4) if (s + 1) % every == 0]
    assert csv_steps(tmp_path / "run") == [*logged, 4]  # rows are 0-based: step 5's row is 4
    run([*args, "ckpt_path=last"], tmp_path / "run")
    after = [s for s in range(5, 8) if (s + 1) % every == 0]
    assert csv_steps(tmp_path / "run") == [*logged, 4, *after]


# -- a checkpoint of another task ------------------------------------------------------------------------
@pytest.mark.slow
def test_an_image_checkpoint_is_refused_by_a_language_model_run_before_data_is_read(tmp_path):
    images = [
        *image_args(image_folder(tmp_path / "images")),
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
    ]
    run(images, tmp_path / "image")
    checkpoint = tmp_path / "image" / "checkpoints" / "last.ckpt"
    missing = tmp_path / "no-such-corpus.txt"
    with pytest.raises(ValueError) as caught:
        run([*LM, "data=textfile", f"data.path={missing}", f"ckpt_path={checkpoint}"], tmp_path / "lm")
    assert str(caught.value) == (
        f"ckpt_path: {checkpoint} was trained as ClassificationTask on image data "
        "(omniformer.data.ImageFolderDataModule); this run is LanguageModelingTask on text data "
        "(omniformer.data.TextDataModule). Resume it with the task and data it was trained with, or "
        "start from it with model.backbone.init_from=<checkpoint> (the backbone only)"
    )
