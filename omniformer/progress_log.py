"""Plain progress lines for runs whose output is not a terminal (nohup, SLURM, CI, ``> file``).

The rich progress bar draws nothing between the model summary and the end of such a run; these lines
say where it is: step out of the run's total, loss, throughput and the time left for the whole run.
"""

from __future__ import annotations

import datetime
import logging
import sys
import time

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn

from omniformer.callbacks import Throughput
from omniformer.results import shown_metrics

log = logging.getLogger("omniformer")


def _duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


class ProgressLog(L.Callback):
    """A log line (``omniformer`` logger: stdout and ``train.log`` under ``omniformer-train``) every
    ``every_n_steps`` optimizer steps and after each validation: step/total, loss, tokens or samples
    per second and the ETA of the whole run.

    Args:
        every_n_steps: a line every this many optimizer steps.
        every_n_seconds: also a line when this many seconds passed since the last one (None: never by time).
        enabled: None: only when stdout is not a terminal (in one, the progress bar shows the same);
            True / False: always / never.
    """

    def __init__(
        self, every_n_steps: int = 50, every_n_seconds: float | None = 30, enabled: bool | None = None
    ) -> None:
        if not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(
                f"callbacks.progress_log.every_n_steps={every_n_steps!r} must be a positive integer"
            )
        self.every_n_steps, self.every_n_seconds = every_n_steps, every_n_seconds
        self.enabled = not sys.stdout.isatty() if enabled is None else bool(enabled)
        self._start = self._last_line = 0.0
        self._start_step = self._last_step = 0
        self._items = 0
        self._total = float("inf")  # the run's optimizer steps
        self._unit = "samples/s"

    def on_train_start(self, trainer, pl_module) -> None:
        self._start = self._last_line = time.perf_counter()
        self._start_step = self._last_step = trainer.global_step
        self._items = 0
        self._total = trainer.estimated_stepping_batches  # computed once: the loader is set up by now
        self._unit = "tokens/s" if hasattr(pl_module, "sample_text") else "samples/s"

    def _shown_total(self) -> str:
        return str(int(self._total)) if self._total != float("inf") else "?"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._items += Throughput._count(batch)
        step = trainer.global_step
        if not self.enabled or not trainer.is_global_zero or step == self._last_step:
            return
        now = time.perf_counter()
        timed = self.every_n_seconds is not None and now - self._last_line >= self.every_n_seconds
        if step % self.every_n_steps and not timed:
            return
        self._last_step, self._last_line = step, now
        elapsed = now - self._start
        done = step - self._start_step
        total = self._total
        eta = "?" if total == float("inf") or not done else _duration(elapsed / done * max(total - step, 0))
        loss = next((v for k, v in trainer.callback_metrics.items() if k.startswith("train_loss")), None)
        shown = f"train_loss {float(loss):.4f} | " if loss is not None else ""
        log.info(
            "step %d/%s | %s%.0f %s | elapsed %s | ETA %s",
            step,
            self._shown_total(),
            shown,
            self._items / max(elapsed, 1e-9),
            self._unit,
            _duration(elapsed),
            eta,
        )

    def on_validation_end(self, trainer, pl_module) -> None:
        fitting = trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking
        if not self.enabled or not fitting or not trainer.is_global_zero:
            return
        metrics = {
            k: float(v) for k, v in trainer.callback_metrics.items() if k.split("/")[-1].startswith("val_")
        }
        metrics = shown_metrics(metrics)  # a multi-task run: the sum's own name, and each member's
        shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))
        log.info("validation at step %d/%s: %s", trainer.global_step, self._shown_total(), shown or "-")
