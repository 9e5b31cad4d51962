"""Callbacks a test adds to a run with ``+callbacks.<name>._target_=tests.helpers.callbacks.<Class>``
(in process or in a CLI subprocess alike), the overrides that add them, and reading what they wrote."""

from __future__ import annotations

import errno
import json
import os
import signal
from pathlib import Path

import lightning as L
import pytest
import torch

from omniformer.train import run

HERE = "tests.helpers.callbacks"


class LossRecorder(L.Callback):
    """Appends ``{"step", "epoch", "batch", "loss", "rank"}`` per optimizer step to a JSON-lines file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        row = {"step": trainer.global_step, "epoch": trainer.current_epoch, "batch": batch_idx}
        with open(self.path, "a") as handle:
            handle.write(json.dumps({**row, "loss": float(loss), "rank": trainer.global_rank}) + "\n")


class CrashAt(L.Callback):
    """At the start of the step after ``step`` optimizer steps: raise, SIGKILL or signal this process.

    ``how``: ``raise`` | ``kill`` | ``SIGTERM`` | ``SIGINT``. Signals are sent once per ``marker``
    file, so the resumed run (same command) is not stopped again.
    """

    def __init__(self, step: int, how: str = "raise", marker: str | None = None) -> None:
        self.step, self.how, self.marker = step, how, marker

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step != self.step:
            return
        if self.marker is not None:
            if Path(self.marker).exists():
                return
            Path(self.marker).touch()
        if self.how == "raise":
            raise RuntimeError(f"simulated crash at step {self.step}")
        os.kill(os.getpid(), signal.SIGKILL if self.how == "kill" else getattr(signal, self.how))


class NaNAt(L.Callback):
    """Makes the backbone's output NaN during the training step after ``step`` optimizer steps."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_start(self, trainer, pl_module) -> None:
        def poison(module, inputs, output):
            if module.training and trainer.global_step == self.step:
                return output * float("nan")
            return output

        pl_module.net.backbone.register_forward_hook(poison)


class WeightDump(L.Callback):
    """Each rank saves its final weights to ``<folder>/weights_rank<r>.pt``."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_train_end(self, trainer, pl_module) -> None:
        state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        torch.save(state, Path(self.folder) / f"weights_rank{trainer.global_rank}.pt")


class LaunchRecord(L.Callback):
    """Each rank writes ``<folder>/launch_rank<r>.json``: its cluster environment, ranks and pid."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_fit_start(self, trainer, pl_module) -> None:
        record = {
            "environment": type(trainer.strategy.cluster_environment).__name__,
            "world_size": trainer.world_size,
            "global_rank": trainer.global_rank,
            "local_rank": trainer.local_rank,
            "node_rank": trainer.node_rank,
            "pid": os.getpid(),
            "torchelastic": "TORCHELASTIC_RUN_ID" in os.environ,
        }
        (Path(self.folder) / f"launch_rank{trainer.global_rank}.json").write_text(json.dumps(record))


# -- a full disk ------------------------------------------------------------------------------------
class DiskFullHandle:
    """A file handle on a disk that fills up after ``room`` bytes (writes then raise ENOSPC)."""

    def __init__(self, handle, room: int) -> None:
        self.handle, self.room = handle, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.handle.__exit__(*exc)


def fill_the_disk(monkeypatch) -> None:
    """Every ``torch.save`` from now on runs out of space part-way, as on a full disk (torch then
    raises its own "unexpected pos" error with the ENOSPC behind it)."""
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        return real_save(obj, DiskFullHandle(f, room=1000), *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


class DiskFullAt(L.Callback):
    """Fills the disk (see :func:`fill_the_disk`) when training starts (in a CLI subprocess)."""

    def on_train_start(self, trainer, pl_module) -> None:
        fill_the_disk(pytest.MonkeyPatch())


# -- the overrides that add them ---------------------------------------------------------------------
def record(path: Path) -> list[str]:
    """Record every step's loss to ``path`` (read it back with :func:`losses`)."""
    return [f"+callbacks.record._target_={HERE}.LossRecorder", f"+callbacks.record.path={path}"]


def crash(step: int) -> list[str]:
    """Raise ``RuntimeError("simulated crash at step <step>")`` at the start of step ``step + 1``."""
    return [f"+callbacks.crash._target_={HERE}.CrashAt", f"+callbacks.crash.step={step}"]


def signal_at(step: int, how: str, marker: Path) -> list[str]:
    """Send this process ``how`` (``SIGTERM``, ``SIGINT``, ``kill``) once, as step ``step + 1`` starts."""
    return [
        f"+callbacks.crash._target_={HERE}.CrashAt",
        f"+callbacks.crash.step={step}",
        f"+callbacks.crash.how={how}",
        f"+callbacks.crash.marker={marker}",
    ]


def disk_full_at_start() -> list[str]:
    """Fill the disk (every later ``torch.save`` fails part-way with ENOSPC) when training starts."""
    return [f"+callbacks.full._target_={HERE}.DiskFullAt"]


def nan_at(step: int) -> list[str]:
    """Make the loss of step ``step + 1`` NaN."""
    return [f"+callbacks.nan._target_={HERE}.NaNAt", f"+callbacks.nan.step={step}"]


def launch_record(folder: Path) -> list[str]:
    """Each rank writes how it was launched to ``folder / launch_rank<r>.json``."""
    return [f"+callbacks.launch._target_={HERE}.LaunchRecord", f"+callbacks.launch.folder={folder}"]


def dump(folder: Path, name: str) -> list[str]:
    """Write each rank's final weights and its losses under ``folder / name``."""
    return [
        f"+callbacks.dump._target_={HERE}.WeightDump",
        f"+callbacks.dump.folder={folder / name}",
        *record(folder / name / "losses.jsonl"),
    ]


# -- reading them back -------------------------------------------------------------------------------
def losses(path: Path) -> dict[int, float]:
    """Optimizer step (1-based) → loss, from a LossRecorder file."""
    return {row["step"]: row["loss"] for row in map(json.loads, path.read_text().splitlines())}


def assert_same_curve(full: dict, first: dict, resumed: dict, resumed_from: int) -> None:
    """The crashed run and its resumption together repeat the uninterrupted run's losses; the
    resumption starts right after step ``resumed_from`` (its checkpoint) and ends where ``full`` does."""
    assert min(resumed) == resumed_from + 1, f"the resumed run starts at step {min(resumed)}"
    assert max(resumed) == max(full)
    for step, loss in {**first, **resumed}.items():
        assert loss == pytest.approx(full[step], abs=1e-4), f"step {step}: {loss} vs {full[step]}"


def interrupted_and_resumed(tmp: Path, args: list[str], crash_step: int) -> tuple[dict, dict, dict]:
    """Losses of the uninterrupted run, of the run that crashed after ``crash_step`` steps, and of its
    resumption with ``ckpt_path=last`` (all in process)."""
    run([*args, *record(tmp / "full.jsonl")], tmp / "full")
    with pytest.raises(RuntimeError, match=f"simulated crash at step {crash_step}"):
        run([*args, *record(tmp / "a.jsonl"), *crash(crash_step)], tmp / "run")
    run([*args, *record(tmp / "b.jsonl"), "ckpt_path=last"], tmp / "run")
    return losses(tmp / "full.jsonl"), losses(tmp / "a.jsonl"), losses(tmp / "b.jsonl")
