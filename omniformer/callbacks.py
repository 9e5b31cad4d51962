"""Lightning callbacks: run metadata in checkpoints and training throughput."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch

from omniformer.checkpoint import FORMAT_VERSION, SECTION, clean_state_dict


class RunInfo(L.Callback):
    """Writes the resolved config and data artifacts into every checkpoint, and keeps state dicts
    free of ``torch.compile`` prefixes.

    Args:
        config: the resolved run config as plain containers.
        artifacts: file name → text of what the data module needs to encode inputs (e.g. vocabulary).
    """

    def __init__(self, config: dict[str, Any], artifacts: dict[str, str]) -> None:
        self.config, self.artifacts = config, artifacts

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = clean_state_dict(checkpoint["state_dict"])
        checkpoint[SECTION] = {"format": FORMAT_VERSION, "config": self.config, "artifacts": self.artifacts}


class Throughput(L.Callback):
    """Measures training time, data-wait time and items processed (tokens or samples).

    ``items`` per batch is the number of elements of the batch's target tensor (the last element of
    a tuple batch): tokens for language modelling, samples for classification.
    """

    def __init__(self) -> None:
        self.items = 0
        self.steps = 0
        self.compute_seconds = 0.0
        self.data_seconds = 0.0
        self._batch_start: float | None = None
        self._batch_end: float | None = None

    @staticmethod
    def _count(batch) -> int:
        target = batch[-1] if isinstance(batch, (tuple, list)) else batch
        return int(target.numel()) if isinstance(target, torch.Tensor) else 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._batch_end is not None:
            self.data_seconds += now - self._batch_end
        self._batch_start = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        self.compute_seconds += now - self._batch_start
        self._batch_end = now
        self.items += self._count(batch)
        self.steps += 1

    def on_validation_start(self, trainer, pl_module) -> None:
        self._batch_end = None  # validation time is not data wait

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._batch_end = None

    @property
    def items_per_second(self) -> float:
        """Items per second of training-loop time (compute plus data wait)."""
        total = self.compute_seconds + self.data_seconds
        return self.items / total if total > 0 else 0.0

    def summary(self) -> dict[str, float]:
        """Throughput figures for ``results.json``."""
        return {
            "train_steps_timed": self.steps,
            "items_per_sec": round(self.items_per_second, 2),
            "ms_per_step": round(1000 * (self.compute_seconds + self.data_seconds) / max(self.steps, 1), 3),
            "data_wait_fraction": round(
                self.data_seconds / max(self.compute_seconds + self.data_seconds, 1e-9), 4
            ),
        }
