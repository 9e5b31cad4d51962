"""Lightning callbacks: run metadata in checkpoints, per-step seeds, non-finite guard, throughput,
progress bar."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar

from omniformer.checkpoint import FORMAT_VERSION, SECTION, clean_state_dict
from omniformer.seeding import mix_seed, seed_all

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
    before clipping and the update. On a bad step the update is dropped, so the weights and the
    optimizer's moments stay as they were; then

    * ``action="stop"``: raise :class:`NonFiniteLossError` naming the step — training ends, and the
      last good checkpoint is left as it was (nothing is saved on this error);
    * ``action="skip"``: go on with the next batch; skipped steps are counted
      (``nonfinite_skipped`` in the logs, ``nonfinite_skipped_steps`` in ``results.json``). The
      learning-rate schedule still advances.

    With ``16-mixed`` precision the gradient scaler already skips overflowing steps, and this guard
    only watches the loss.

    **Checking interval.** Deciding on the host whether a step was bad is a device→host
    synchronisation; on a GPU it stalls the queue of work once per step. With
    ``check_every_n_steps`` above 1 and an optimizer that can drop its own update on the device
    (``found_inf``, as the gradient scaler uses it: fused AdamW, the default on CUDA), the guard
    keeps one flag per step on the device and reads them every N optimizer steps. Then:

    * exact, every step: a bad step's update is dropped on the device (weights, moments and the
      optimizer's step count unchanged). With ``stop``, every update after it is dropped too, so
      the weights stay those from before the bad step until the error is raised;
    * exact when reported: the error and the warnings name the bad steps; ``nonfinite_skipped`` in
      the logs is exact at every step;
    * delayed by up to N-1 optimizer steps: the error (``stop``), the warnings (``skip``), stopping
      after ``max_skips``, and the count kept in checkpoints and ``results.json``. The flags are
      also read before every checkpoint is written and when training ends, so no checkpoint is
      written after an unreported bad step and the final count is exact. With ``16-mixed`` (the
      scaler drops the bad updates) the steps between a bad step and the check still train; the
      error then discards them, as no checkpoint holds them.

    An optimizer without ``found_inf`` (e.g. unfused AdamW) is checked at every step whatever
    ``check_every_n_steps`` says.

    Args:
        action: ``"stop"`` or ``"skip"``.
        max_skips: with ``skip``, stop anyway after this many skipped steps (``None``: never).
        check_every_n_steps: read the flags every this many optimizer steps. ``None``: every step
            when training on the CPU (reading costs nothing there), else every
            ``trainer.log_every_n_steps`` steps (Lightning reads the loss to the host then anyway).
    """

    def __init__(
        self,
        action: Literal["stop", "skip"] = "stop",
        max_skips: int | None = None,
        check_every_n_steps: int | None = None,
    ) -> None:
        if action not in ("stop", "skip"):
            raise ValueError(f"callbacks.nonfinite.action={action!r}; choose 'stop' or 'skip'")
        if max_skips is not None and max_skips < 0:
            raise ValueError(f"callbacks.nonfinite.max_skips={max_skips} must be >= 0 (or null)")
        if check_every_n_steps is not None and check_every_n_steps < 1:
            raise ValueError(
                f"callbacks.nonfinite.check_every_n_steps={check_every_n_steps} must be >= 1 (or null)"
            )
        self.action, self.max_skips = action, max_skips
        self.check_every_n_steps = check_every_n_steps
        self.skipped = 0
        self.every = 1  # the interval in use, resolved when training starts
        self._flags: list[torch.Tensor] = []  # one device flag per unread step
        self._where: list[tuple[int, int, int]] = []  # (step, epoch, batch) of each flag
        self._pending: torch.Tensor | None = None  # device count of unread bad steps (for the logs)
        self._frozen: torch.Tensor | None = None  # stop: an unread step was bad, drop every update
        self._armed: list[torch.optim.Optimizer] = []  # optimizers given a found_inf this step

    @staticmethod
    def _scaler_active(trainer) -> bool:
        return getattr(trainer.precision_plugin, "scaler", None) is not None

    def on_train_start(self, trainer, pl_module) -> None:
        every = self.check_every_n_steps
        if every is None:
            every = 1 if pl_module.device.type == "cpu" else max(int(trainer.log_every_n_steps or 1), 1)
        drops_on_device = all(getattr(o, "_step_supports_amp_scaling", False) for o in trainer.optimizers)
        self.every = every if self._scaler_active(trainer) or drops_on_device else 1

    def _message(self, trainer, what: str, where: tuple[int, int, int] | None = None) -> str:
        if where is None:
            loss = trainer.callback_metrics.get("train_loss")
            shown = f"train_loss={float(loss):.6g}, " if loss is not None else ""
            return (
                f"non-finite {what} at training step {trainer.global_step} "
                f"({shown}epoch {trainer.current_epoch}, batch {trainer.fit_loop.batch_idx})"
            )
        step, epoch, batch = where
        return (
            f"non-finite {what} at training step {step} (epoch {epoch}, batch {batch}; read at step "
            f"{trainer.global_step}, callbacks.nonfinite.check_every_n_steps={self.every})"
        )

    def _bad_step(self, trainer, what: str, where: tuple[int, int, int] | None = None) -> None:
        message = self._message(trainer, what, where)
        if self.action == "skip" and (self.max_skips is None or self.skipped < self.max_skips):
            self.skipped += 1
            log.warning(
                "%s: step skipped (%d so far; callbacks.nonfinite.action=skip)", message, self.skipped
            )
            return
        if self.action == "skip":
            message += f": more than callbacks.nonfinite.max_skips={self.max_skips} bad steps"
        frozen = where is not None and not self._scaler_active(trainer)  # later updates were dropped
        after = " (nor with any step after it)" if frozen else ""
        raise NonFiniteLossError(
            f"{message}. Training stopped; the weights were not updated with it{after} and the last "
            "good checkpoint is unchanged. Lower optim.lr, set trainer.gradient_clip_val, or use "
            "callbacks.nonfinite.action=skip to skip such steps"
        )

    def _record(self, trainer, bad: torch.Tensor) -> None:
        """Keep a step's flag on the device (no synchronisation)."""
        self._flags.append(bad)
        self._where.append((trainer.global_step, trainer.current_epoch, trainer.fit_loop.batch_idx))
        count = bad.float()
        self._pending = count if self._pending is None else self._pending + count

    def _read(self, trainer) -> None:
        """Read the unread flags (one synchronisation) and act on the bad steps, in order."""
        if not self._flags:
            return
        flags = torch.stack(self._flags).tolist()
        where, what = self._where, "loss" if self._scaler_active(trainer) else "loss or gradient"
        self._flags, self._where, self._pending, self._frozen = [], [], None, None
        for bad, place in zip(flags, where):
            if bad:
                self._bad_step(trainer, what, place)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self._scaler_active(trainer):
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        norms = torch._foreach_norm(grads)  # one norm per tensor; NaN/Inf anywhere shows in its norm
        bad = ~torch.isfinite(torch.stack([n.float() for n in norms])).all()
        if self.every > 1:
            if trainer.world_size > 1 and torch.distributed.is_initialized():  # sharded gradients (FSDP)
                bad = bad.float()
                torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)  # queued, no wait
                bad = bad > 0
            self._record(trainer, bad)
            if self.action == "stop":
                self._frozen = bad if self._frozen is None else self._frozen | bad
                bad = self._frozen
            optimizer.found_inf = bad.float()  # the fused step leaves weights and moments alone
            self._armed.append(optimizer)
            return
        bad = bool(bad)  # one host synchronisation
        if trainer.world_size > 1:  # sharded gradients (FSDP): every rank must decide alike
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            return
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None  # an optimizer step without gradients leaves weights and moments alone
        self._bad_step(trainer, "loss or gradient")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        for optimizer in self._armed:  # a found_inf left behind would drop later updates
            del optimizer.found_inf
        self._armed = []
        if self._scaler_active(trainer):  # the scaler skipped the update; still report a NaN loss
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
            if isinstance(loss, torch.Tensor):
                if self.every > 1:
                    self._record(trainer, ~torch.isfinite(loss.detach()).all())
                elif not bool(torch.isfinite(loss)):
                    self._bad_step(trainer, "loss")
        if self.action == "skip":
            count = float(self.skipped) if self._pending is None else self._pending + self.skipped
            pl_module.log("nonfinite_skipped", count, on_step=True, on_epoch=False)
        if len(self._flags) >= self.every:
            self._read(trainer)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        # No checkpoint after an unreported bad step, and the count it keeps is exact.
        self._read(trainer)
        if self.state_key in checkpoint.get("callbacks", {}):
            checkpoint["callbacks"][self.state_key] = self.state_dict()

    def on_train_end(self, trainer, pl_module) -> None:
        self._read(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        for optimizer in self._armed:
            del optimizer.found_inf
        self._armed = []

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))


class Throughput(L.Callback):
    """Measures training time, data-wait time and items processed (tokens or samples).

    ``items`` per batch is the number of elements of the batch's target tensor (the last element of
    a tuple batch): tokens for language modelling, samples for classification. A multi-task batch
    (``{member: batch}``) counts samples, the rows of each present member's batch: its members'
    tokens and images are not one unit.
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
        if isinstance(batch, Mapping):
            return sum(Throughput._rows(part) for part in batch.values())
        target = batch[-1] if isinstance(batch, (tuple, list)) else batch
        return int(target.numel()) if isinstance(target, torch.Tensor) else 0

    @staticmethod
    def _rows(batch) -> int:
        first = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
        return int(first.shape[0]) if isinstance(first, torch.Tensor) and first.dim() else 0

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


class StepProgressBar(RichProgressBar):
    """Lightning's rich progress bar, made true for runs whose length is ``trainer.max_steps``.

    With ``max_epochs=-1`` Lightning labels the bar "Epoch 0/-2" (``max_epochs - 1``). Here such runs
    show "Epoch 0" and, among the metrics, the optimizer step out of ``max_steps`` (``step: 120/1500``).
    Runs bounded by epochs look as in Lightning. Same arguments as ``RichProgressBar``.
    """

    @staticmethod
    def _step_based(trainer) -> bool:
        return trainer.max_epochs is None or trainer.max_epochs < 0

    def _get_train_description(self, current_epoch: int) -> str:
        if not self._step_based(self.trainer):
            return super()._get_train_description(current_epoch)
        # padded to the validation bar's label, as Lightning does, so the two don't flicker
        return f"{f'Epoch {current_epoch}':{len(self.validation_description)}}"

    def get_metrics(self, trainer, pl_module) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        if self._step_based(trainer) and trainer.max_steps > 0:
            metrics = {"step": f"{trainer.global_step}/{trainer.max_steps}", **metrics}
        return metrics
