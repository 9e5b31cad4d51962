"""Crash safety: kills during checkpoint writes, SIGTERM / Ctrl-C, non-finite losses, broken files.

Every case checks that the checkpoint saved before the fault is still there and loads.
"""

from __future__ import annotations

import json
import math
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from omniformer.callbacks import NonFiniteLossError
from omniformer.checkpoint import load_checkpoint, safe_torch_load
from omniformer.checkpoint_io import AtomicCheckpointIO
from omniformer.files import atomic_torch_save, stale_temporaries
from omniformer.train import run
from tests.helpers.callbacks import losses, nan_at, record, signal_at
from tests.helpers.overrides import BIG_LM, LM
from tests.helpers.paths import REPO
from tests.helpers.runs import run_cli

CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


# -- atomic writes -----------------------------------------------------------------------------------
def test_a_save_interrupted_mid_write_leaves_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1, "w": torch.ones(4)}, target)
    real_save = torch.save

    def dies_half_way(obj, handle, *args, **kwargs):
        real_save(obj, handle, *args, **kwargs)
        handle.truncate(handle.tell() // 2)  # half a file on disk, then the "kill"
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"step": 2, "w": torch.zeros(4)}, target)
    monkeypatch.undo()
    assert safe_torch_load(target)["step"] == 1  # the old file, whole
    assert stale_temporaries(target) == []  # the half-written temporary was removed


def test_a_stale_temporary_from_a_killed_save_is_removed_by_the_next_save(tmp_path):
    target = tmp_path / "last.ckpt"
    stale = tmp_path / ".last.ckpt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    AtomicCheckpointIO().save_checkpoint({"step": 3}, target)
    assert not stale.exists() and safe_torch_load(target)["step"] == 3
    assert oct(target.stat().st_mode & 0o777) != oct(0o600)  # not left private like a temp file


# A long-lived process imports torch and the checkpoint writer once, then forks a fresh writer per
# kill: 20 kills cost seconds, not 20 interpreter start-ups.
FORKING_WRITER = """
import os, sys, torch
from omniformer.checkpoint_io import AtomicCheckpointIO
torch.set_num_threads(1)
io, target = AtomicCheckpointIO(), sys.argv[1]
for line in sys.stdin:
    step = int(line)
    pid = os.fork()
    if pid == 0:
        while True:  # save a ~16 MB checkpoint every step until killed
            step += 1
            state = {"w": torch.full((4_000_000,), float(step)), "b": torch.arange(step % 97)}
            io.save_checkpoint({"step": step, "state_dict": state}, target)
    print(pid, flush=True)
    os.waitpid(pid, 0)
"""


def _wait_for_a_write(target: Path, old: set[Path], timeout: float = 60) -> None:
    """Return once a new temporary file beside ``target`` (not in ``old``) holds data: a save is under
    way."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for tmp in set(stale_temporaries(target)) - old:
            try:
                if tmp.stat().st_size > 0:
                    return
            except FileNotFoundError:
                continue  # renamed between listing and stat
        time.sleep(0.001)
    raise AssertionError("no checkpoint write was caught in time")


@pytest.mark.slow
def test_twenty_sigkills_at_random_moments_never_break_the_checkpoint(tmp_path):
    """20 ``kill -9`` of a writer that saves every step, at random moments: half in the middle of a
    write (a random delay after its temporary file gets data), half at a random time. Each time the
    surviving file loads with its per-tensor checksums verified, and no saved step is lost."""
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 0, "state_dict": {}}, target)
    server = subprocess.Popen(
        [sys.executable, "-c", FORKING_WRITER, str(target)],
        cwd=REPO,
        env=CHILD_ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    rng = random.Random(13)
    steps, torn = [0], 0
    try:
        for kill in range(20):
            old = set(stale_temporaries(target))
            server.stdin.write(f"{steps[-1]}\n")
            server.stdin.flush()
            writer = int(server.stdout.readline())
            if kill % 2 == 0:
                _wait_for_a_write(target, old)
                time.sleep(rng.uniform(0, 0.02))
            else:
                time.sleep(rng.uniform(0.05, 0.6))
            os.kill(writer, signal.SIGKILL)
            time.sleep(0.01)
            torn += bool(stale_temporaries(target))  # killed with a half-written temporary
            checkpoint = safe_torch_load(target)  # raises if the file is torn or a tensor changed
            assert checkpoint["step"] >= steps[-1]  # never lost a previously saved step
            assert bool((checkpoint["state_dict"].get("w", torch.zeros(1)) == checkpoint["step"]).all())
            steps.append(checkpoint["step"])
    finally:
        server.stdin.close()
        server.wait(30)
    assert steps[-1] > 10 and torn >= 5  # the writers saved between kills, and died mid-write
    AtomicCheckpointIO().save_checkpoint({"step": -1}, target)
    assert stale_temporaries(target) == []


def _kill_when_writing(proc: subprocess.Popen, target: Path, timeout: float = 120) -> Path:
    """SIGKILL ``proc`` as soon as a temporary file beside ``target`` has data in it; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for tmp in stale_temporaries(target):
            try:
                if tmp.stat().st_size > 0:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(30)
                    return tmp
            except FileNotFoundError:
                continue  # renamed between listing and stat
        if proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) before a write was caught")
        time.sleep(0.002)  # a 40-64 MB write with fsync lasts far longer than this
    proc.kill()
    raise AssertionError("no checkpoint write was caught in time")


@pytest.mark.slow
def test_killing_training_while_it_writes_last_ckpt_leaves_it_loadable_and_resumable(tmp_path):
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    args = [*BIG_LM, "task.sample_tokens=0", f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "omniformer.train", *args],
        cwd=REPO,
        env=CHILD_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not last.exists():  # let a first last.ckpt be written, then catch the next write
        assert time.monotonic() < deadline and proc.poll() is None, "training never wrote last.ckpt"
        time.sleep(0.01)
    _kill_when_writing(proc, last)
    checkpoint = load_checkpoint(last)  # weights-only, whole, with its config and vocabulary
    assert 1 <= checkpoint["global_step"] < 16 and "vocab.json" in checkpoint["omniformer"]["artifacts"]
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values())
    # in-process (the CLI's code path without its start-up); last.ckpt again only at the end
    run([*args, "ckpt_path=last", "callbacks.checkpoint.every_n_train_steps=null"])
    results = json.loads((run_dir / "results.json").read_text())
    assert results["steps"] == 16 and results["resumed_at_step"] == checkpoint["global_step"]
    assert stale_temporaries(last) == []


# -- SIGTERM / Ctrl-C ----------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(("how", "code"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_saves_a_resumable_checkpoint_and_prints_the_resume_command(tmp_path, how, code):
    run_dir, curve = tmp_path / "run", tmp_path / "curve.jsonl"
    stop = signal_at(5, how, marker=tmp_path / "signalled")
    args = [*LM, "callbacks.checkpoint.every_n_train_steps=null", *record(curve), *stop]
    proc = run_cli("omniformer.train", *args, f"hydra.run.dir={run_dir}", check=False)
    assert proc.returncode == code, proc.stderr[-3000:]
    assert (
        f"Training stopped by {how} after step 6. Checkpoint: {run_dir}/checkpoints/last.ckpt" in proc.stderr
    )
    # The signal came during step 6 (5 done): that step is finished, saved, and training stops.
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 6
    assert "Traceback" not in proc.stderr
    if how == "SIGINT":
        return
    # The printed command continues the run, and the losses are those of an uninterrupted run.
    command = proc.stderr.split("Resume with:\n", 1)[1].strip().splitlines()[0]
    argv = shlex.split(command)
    assert argv[0] == "omniformer-train" and argv[-1] == "ckpt_path=last"
    run(argv[1:])  # the printed overrides, in-process (the CLI's code path without its start-up time)
    run(
        [*LM, "callbacks.checkpoint.every_n_train_steps=null", *record(tmp_path / "full.jsonl")],
        tmp_path / "full",
    )
    full, interrupted = losses(tmp_path / "full.jsonl"), losses(curve)
    assert sorted(interrupted) == sorted(full) == list(range(1, 13))
    for step in full:
        assert interrupted[step] == pytest.approx(full[step], abs=1e-4), step


# -- non-finite losses ---------------------------------------------------------------------------------
def test_a_nan_loss_stops_training_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError) as caught:
        run([*LM, "trainer.max_steps=8", *nan_at(4)], tmp_path)
    message = str(caught.value)
    assert "non-finite loss or gradient at training step 4" in message
    assert f"The last good checkpoint is {tmp_path}/checkpoints/last.ckpt" in message
    checkpoint = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 4  # written after the validation at step 4; nothing after the NaN
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values())
    assert not (tmp_path / "results.json").exists()


def test_skip_mode_drops_the_bad_step_counts_it_and_finishes(tmp_path):
    results = run(
        [*LM, *nan_at(4), "callbacks.nonfinite.action=skip", *record(tmp_path / "c.jsonl")], tmp_path
    )
    assert results["nonfinite_skipped_steps"] == 1 and results["steps"] == 12
    curve = losses(tmp_path / "c.jsonl")
    assert math.isnan(curve[5]) and all(math.isfinite(v) for s, v in curve.items() if s != 5)
    weights = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["state_dict"]
    assert all(torch.isfinite(t).all() for t in weights.values())
    logged = (tmp_path / "logs" / "metrics.csv").read_text()
    assert "nonfinite_skipped" in logged.splitlines()[0]


def test_skip_mode_gives_up_after_max_skips(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"more than callbacks\.nonfinite\.max_skips=0 bad steps"):
        run([*LM, *nan_at(2), "callbacks.nonfinite.action=skip", "callbacks.nonfinite.max_skips=0"], tmp_path)


# -- broken files ------------------------------------------------------------------------------------------
def _broken_files(good: Path, folder: Path) -> dict[str, Path]:
    data = good.read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "zero-bytes": b"",
        "random-bytes": os.urandom(4096),
        "text": b"this is not a checkpoint\n",
        "flipped-bytes": data[:1000] + bytes(b ^ 0xFF for b in data[1000:1400]) + data[1400:],
    }
    paths = {}
    for name, content in cases.items():
        paths[name] = folder / f"{name}.ckpt"
        paths[name].write_bytes(content)
    return paths


def test_broken_checkpoint_files_are_named_and_refused(tiny_lm_checkpoint, tmp_path):
    for name, path in _broken_files(tiny_lm_checkpoint, tmp_path).items():
        with pytest.raises(ValueError) as caught:
            load_checkpoint(path)
        assert str(path) in str(caught.value), name
        assert "not a readable checkpoint" in str(caught.value) or "refusing" in str(caught.value), name
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(ValueError, match="is not an omniformer checkpoint"):
        load_checkpoint(foreign)
    assert load_checkpoint(tiny_lm_checkpoint)["global_step"] == 3  # the good file (step 3) is untouched


@pytest.mark.slow
def test_resuming_from_a_broken_last_ckpt_names_the_file_before_training(tiny_lm_checkpoint, tmp_path):
    paths = _broken_files(tiny_lm_checkpoint, tmp_path)
    for name in ("truncated", "zero-bytes"):
        with pytest.raises(ValueError, match=f"{paths[name]} is not a readable checkpoint"):
            run([*LM, f"ckpt_path={paths[name]}"], tmp_path / f"resume-{name}")
        assert not (tmp_path / f"resume-{name}" / "checkpoints").exists(), name
