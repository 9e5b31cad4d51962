"""Lightning callbacks: run metadata in checkpoints, per-step seeds, non-finite guard, throughput."""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

import lightning as L
import torch

from omniformer.checkpoint import FORMAT_VERSION, SECTION, clean_state_dict
from omniformer.resume import mix_seed, seed_all

log = logging.getLogger("omniformer")


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


class StepSeed(L.Callback):
    """Seeds torch, ``random`` and NumPy before every training batch from ``(seed, rank, batch)``.

    Dropout masks, SpecAugment masks and any other randomness inside a training step then depend
    only on the run's seed and the batch's position in training — not on what ran before it
    (validation, loader start-up, a resume from a checkpoint). That makes a resumed run repeat the
    uninterrupted one exactly, without carrying RNG states in checkpoints. fairseq seeds each update
    the same way (``seed + num_updates``). The rank is mixed in so that processes of a multi-process
    run draw different masks.

    It seeds the CPU generator directly, and the CUDA ones only once CUDA is initialised (it is
    by the first batch of a GPU run): ``torch.manual_seed`` would cost ~20x more per step, mostly
    in queueing a lazy CUDA seeding (with a captured stack trace) on every call. Other accelerators
    (MPS, XPU) still get ``torch.manual_seed``.

    Args:
        seed: the run's seed.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # total_batch_idx counts every training batch of the run and is restored on resume.
        seed = mix_seed(self.seed, trainer.global_rank, trainer.fit_loop.total_batch_idx)
        self.seed_step(seed, pl_module.device)

    @staticmethod
    def seed_step(seed: int, device: torch.device) -> None:
        """Seed torch (the CPU and every initialised CUDA device), ``random`` and NumPy."""
        if device.type not in ("cpu", "cuda"):
            torch.manual_seed(seed)  # every backend torch knows
        elif torch.cuda.is_initialized():
            torch.cuda.manual_seed_all(seed)
        seed_all(seed)  # CPU generator, random, NumPy


class NonFiniteLossError(RuntimeError):
    """Training met a non-finite loss or gradient and was configured to stop."""


class NonFiniteGuard(L.Callback):
    """Checks the gradients before every optimizer step; NaN/Inf never reach the weights.

    A non-finite loss makes non-finite gradients, and so does an overflow in the backward pass; the
    check runs after the gradients are complete (accumulated, and averaged across processes) and
    before clipping and the update. On a bad step the gradients are dropped, so the weights and the
    optimizer's moments stay as they were; then

    * ``action="stop"``: raise :class:`NonFiniteLossError` naming the step — training ends, and the
      last good checkpoint is left as it was (nothing is saved on this error);
    * ``action="skip"``: go on with the next batch; skipped steps are counted
      (``nonfinite_skipped`` in the logs, ``nonfinite_skipped_steps`` in ``results.json``). The
      learning-rate schedule still advances.

    With ``16-mixed`` precision the gradient scaler already skips overflowing steps, and this guard
    only watches the loss. The check costs one host synchronisation per optimizer step.

    Args:
        action: ``"stop"`` or ``"skip"``.
        max_skips: with ``skip``, stop anyway after this many skipped steps (``None``: never).
    """

    def __init__(self, action: Literal["stop", "skip"] = "stop", max_skips: int | None = None) -> None:
        if action not in ("stop", "skip"):
            raise ValueError(f"callbacks.nonfinite.action={action!r}; choose 'stop' or 'skip'")
        if max_skips is not None and max_skips < 0:
            raise ValueError(f"callbacks.nonfinite.max_skips={max_skips} must be >= 0 (or null)")
        self.action, self.max_skips = action, max_skips
        self.skipped = 0

    @staticmethod
    def _scaler_active(trainer) -> bool:
        return getattr(trainer.precision_plugin, "scaler", None) is not None

    def _message(self, trainer, what: str) -> str:
        loss = trainer.callback_metrics.get("train_loss")
        shown = f"train_loss={float(loss):.6g}, " if loss is not None else ""
        return (
            f"non-finite {what} at training step {trainer.global_step} "
            f"({shown}epoch {trainer.current_epoch}, batch {trainer.fit_loop.batch_idx})"
        )

    def _bad_step(self, trainer, what: str) -> None:
        message = self._message(trainer, what)
        if self.action == "skip" and (self.max_skips is None or self.skipped < self.max_skips):
            self.skipped += 1
            log.warning(
                "%s: step skipped (%d so far; callbacks.nonfinite.action=skip)", message, self.skipped
            )
            return
        if self.action == "skip":
            message += f": more than callbacks.nonfinite.max_skips={self.max_skips} bad steps"
        raise NonFiniteLossError(
            f"{message}. Training stopped; the weights were not updated with it and the last good "
            "checkpoint is unchanged. Lower optim.lr, set trainer.gradient_clip_val, or use "
            "callbacks.nonfinite.action=skip to skip such steps"
        )

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self._scaler_active(trainer):
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        norms = torch._foreach_norm(grads)  # one norm per tensor; NaN/Inf anywhere shows in its norm
        bad = not bool(torch.isfinite(torch.stack([n.float() for n in norms])).all())
        if trainer.world_size > 1:  # sharded gradients (FSDP): every rank must decide alike
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            return
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None  # an optimizer step without gradients leaves weights and moments alone
        self._bad_step(trainer, "loss or gradient")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._scaler_active(trainer):  # the scaler skipped the update; still report a NaN loss
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
            if isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss)):
                self._bad_step(trainer, "loss")
        if self.action == "skip":
            pl_module.log("nonfinite_skipped", float(self.skipped), on_step=True, on_epoch=False)

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))


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
