"""Early stopping on the task's monitored metric (Lightning's ``EarlyStopping``), off by default.

``conf/callbacks/default.yaml`` adds it with ``patience: null`` (off) and the checkpoint's ``monitor``
and ``mode`` (``val_acc``/max for classifiers, ``val_cer``/min for prefix LMs, ``val_loss``/min
otherwise: what each ``conf/task/*.yaml`` sets), so turning it on is one override::

    omniformer-train task=image_classification callbacks.early_stopping.patience=5
    omniformer-train callbacks=early_stopping          # the same, patience 5 (conf/callbacks/)

Training stops once the metric has not improved by more than ``min_delta`` for ``patience``
validations in a row; ``results.json`` then says so (``early_stopped``, ``early_stopped_at_step``,
``early_stopping_best``), and ``best.ckpt`` still holds the best weights.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping

from omniformer.argument_checks import require_valid

log = logging.getLogger("omniformer")


class EarlyStop(EarlyStopping):
    """Lightning's ``EarlyStopping``, off while ``patience`` is ``None``, that remembers the step at
    which it stopped training.

    Args:
        monitor: the validation metric watched (the checkpoint's: what the task monitors).
        mode: ``min`` or ``max``: which way is better.
        patience: validations without improvement before training stops; ``None``: never stop.
        min_delta: the least change that counts as an improvement.
        stopping_threshold: stop at once when the metric reaches this value (``None``: never).
        divergence_threshold: stop at once when the metric gets worse than this (``None``: never).
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: str = "min",
        patience: int | None = None,
        min_delta: float = 0.0,
        stopping_threshold: float | None = None,
        divergence_threshold: float | None = None,
    ) -> None:
        require_valid(self.check_config, mode=mode, patience=patience, min_delta=min_delta)
        super().__init__(
            monitor=monitor,
            mode=mode,
            patience=0 if patience is None else patience,
            min_delta=min_delta,
            stopping_threshold=stopping_threshold,
            divergence_threshold=divergence_threshold,
        )
        self.enabled = patience is not None
        self.stopped_step: int | None = None

    @staticmethod
    def check_config(args: Mapping[str, Any]) -> list[str]:
        """The rules among the settings in ``args`` (see :mod:`omniformer.argument_checks`)."""
        problems = []
        patience = args.get("patience")
        if patience is not None and (
            isinstance(patience, bool) or not isinstance(patience, int) or patience < 1
        ):
            problems.append(
                "{patience}: give a whole number >= 1 of validations without improvement, or null (off)"
            )
        if args.get("mode", "min") not in ("min", "max"):
            problems.append("{mode}: choose 'min' (lower is better) or 'max'")
        min_delta = args.get("min_delta", 0.0)
        if isinstance(min_delta, (int, float)) and min_delta < 0:
            problems.append("{min_delta} must be >= 0")
        return problems

    def _run_early_stopping_check(self, trainer: L.Trainer) -> None:
        if not self.enabled:
            return
        stopping = trainer.should_stop
        super()._run_early_stopping_check(trainer)
        if trainer.should_stop and not stopping and self.stopped_step is None:
            self.stopped_step = int(trainer.global_step)
            if trainer.is_global_zero:
                log.info(
                    "early stopping at step %d: %s", self.stopped_step, self.stopping_reason_message or ""
                )

    def results(self) -> dict[str, Any]:
        """What ``results.json`` records: whether it stopped training, at which step, and the best
        value of the metric it saw (nothing while off)."""
        if not self.enabled:
            return {}
        out: dict[str, Any] = {"early_stopped": self.stopped_step is not None}
        if self.stopped_step is not None:
            out["early_stopped_at_step"] = self.stopped_step
        best = float(self.best_score)
        if abs(best) != float("inf"):
            out["early_stopping_best"] = round(best, 6)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "stopped_step": self.stopped_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        patience = self.patience  # a resumed run waits as long as its own config says
        super().load_state_dict(state_dict)
        self.patience = patience
        self.stopped_step = state_dict.get("stopped_step")
