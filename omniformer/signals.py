"""Stopping a training run on SIGTERM / SIGINT with a resumable checkpoint.

Cluster schedulers send SIGTERM before they kill a job (preemption, time limit); people press
Ctrl-C. Either way the run should end with a ``last.ckpt`` that continues exactly where it stopped,
and tell the user how. :class:`GracefulStop` installs handlers for the two signals while the fit
loop runs; a handler only records the request (doing work inside a signal handler, at an arbitrary
point of an optimizer step, is how checkpoints get inconsistent). At the next consistent point —
the end of the current optimizer step, or the end of a validation — the callback writes
``last.ckpt`` and raises :class:`StopRequested`, which ``omniformer-train`` turns into a message
with the exact resume command and exit status 128 + signal number (143 for SIGTERM, 130 for SIGINT).
A second Ctrl-C aborts at once (Python's usual ``KeyboardInterrupt``).

Lightning 2.6's own SIGTERM handling (``trainer.received_sigterm``, ``SIGTERMException``) stops at
the next step or in the middle of a validation without writing a checkpoint, and exits with status
0; it stays in charge before and after the fit loop (data setup, the final test), and its launcher
still forwards SIGTERM to the processes it started. In multi-process runs the decision to stop is
reduced across ranks (any rank asked) so that every rank saves and stops at the same step.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.trainer.states import TrainerFn

log = logging.getLogger("omniformer")

HANDLED = (signal.SIGTERM, signal.SIGINT)


class StopRequested(Exception):
    """Training stopped on a signal after writing ``checkpoint`` at optimizer step ``step``."""

    def __init__(self, signum: int, step: int, checkpoint: str | None) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.signal_name = signal.Signals(signum).name
        where = f"checkpoint saved to {checkpoint}" if checkpoint else "no checkpoint could be written"
        super().__init__(f"training stopped by {self.signal_name} after step {step}; {where}")

    @property
    def exit_code(self) -> int:
        """The shell's convention for "terminated by signal N": 128 + N."""
        return 128 + self.signum


class GracefulStop(Checkpoint):
    """On SIGTERM / SIGINT: finish the current step, write ``last.ckpt``, raise :class:`StopRequested`.

    A :class:`~lightning.pytorch.callbacks.Checkpoint` subclass so that Lightning orders it with the
    checkpoint callbacks, after the configured :class:`~omniformer.run_checkpoint.RunCheckpoint`: a
    stop at the end of a validation comes after that validation's best/last checkpoints.

    Args:
        default_path: where to write when no ``RunCheckpoint`` is configured.
    """

    def __init__(self, default_path: str | Path | None = None) -> None:
        self.default_path = str(default_path) if default_path else None
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}
        self._trainer: L.Trainer | None = None

    # -- handlers ------------------------------------------------------------------------------------
    def _handle(self, signum: int, frame) -> None:
        if signum == signal.SIGINT and self.requested == signal.SIGINT:
            self._restore()
            raise KeyboardInterrupt  # second Ctrl-C: abort now
        first = self.requested is None
        self.requested = signum
        if first:
            name = signal.Signals(signum).name
            hint = " (Ctrl-C again to abort at once)" if signum == signal.SIGINT else ""
            log.warning(
                "%s received: saving a checkpoint after the current step, then stopping%s", name, hint
            )
            launcher = self._trainer.strategy.launcher if self._trainer is not None else None
            if signum == signal.SIGTERM and launcher is not None:
                launcher.kill(signum)  # as Lightning does: processes it started get the signal too

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for signum in HANDLED:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def _restore(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    # -- hooks ---------------------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._trainer = trainer
        if trainer.received_sigterm:  # arrived while Lightning's handler was in charge
            self.requested = signal.SIGTERM
        self._install()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not trainer.fit_loop._should_accumulate():
            self._stop_if_requested(trainer, log_step=True)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._stop_if_requested(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore()

    # -- stopping ------------------------------------------------------------------------------------
    def _stop_if_requested(self, trainer: L.Trainer, log_step: bool = False) -> None:
        requested = self.requested is not None
        if trainer.world_size > 1:  # every rank must save (a collective) and stop at the same step
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        if not requested:
            return
        signum = self.requested if self.requested is not None else signal.SIGTERM
        if log_step:
            self._log_this_step(trainer)
        path = self._save(trainer)
        raise StopRequested(signum, trainer.global_step, path)

    @staticmethod
    def _log_this_step(trainer: L.Trainer) -> None:
        """Log the finished step's metrics (``train_loss``...) and flush the loggers now.

        Lightning logs a step's metrics after ``on_train_batch_end``, which the stop never returns to,
        and only every ``trainer.log_every_n_steps`` steps: the step ``last.ckpt`` holds would have no
        row in ``logs/metrics.csv``, and the resumed run starts after it.
        """
        connector = trainer._logger_connector  # private Lightning API (2.x), hence the guard
        try:
            connector.log_metrics(connector.metrics["log"])
        except Exception as err:  # the checkpoint matters more than the row
            log.warning("could not log step %d's metrics before stopping: %s", trainer.global_step, err)

    def _save(self, trainer: L.Trainer) -> str | None:
        from omniformer.run_checkpoint import RunCheckpoint

        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, RunCheckpoint) and callback.save_last:
                return callback.save_last_now(trainer)
        if self.default_path is None:
            return None
        trainer.save_checkpoint(self.default_path)
        return self.default_path

    def state_dict(self) -> dict[str, Any]:
        return {}
