"""Deciding when a run writes its checkpoints: ``last.ckpt`` to continue from, ``best.ckpt`` to keep.

:class:`RunCheckpoint`, the ``ModelCheckpoint`` every ``omniformer-train`` run uses, writes
``best.ckpt`` only right after a validation (so its weights are the ones the score was measured on;
a run that judged none during the fit keeps its final validation's weights, see
:meth:`RunCheckpoint.keep_final_validation`) and ``last.ckpt`` every ``every_n_train_steps``
optimizer steps, after every validation and when training ends. A run folder holds one
``last.ckpt`` and one ``best.ckpt``, also after it was copied or moved.

How a checkpoint is written (atomically, with checksums) is
:class:`omniformer.checkpoint_io.AtomicCheckpointIO`'s job.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn


class RunCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every N steps, after validations and at the end; ``best.ckpt`` after validations.

    Lightning's ``ModelCheckpoint(every_n_train_steps=N)`` would also judge the *best* checkpoint at
    those steps, against the latest validation score — measured on older weights — and then skip
    the save after the validation itself. Here the two are separate: the monitored metric is only
    compared right after a validation, and ``last.ckpt`` holds everything needed to continue
    (model, optimizer, schedule, loop counters, data-sampler position, the best-so-far record).

    ``last.ckpt`` is always that one file: Lightning's version counter would write ``last-v1.ckpt``
    beside an existing ``last.ckpt`` it does not recognise as its own (a fresh run in a used folder, a
    resumed copy of a run folder), while ``ckpt_path=last`` keeps reading ``last.ckpt``. With
    ``save_top_k`` 0 or 1 the best is likewise always ``best.ckpt``. A run folder copied or moved
    elsewhere resumes as itself: the file names its checkpoints record are read as this folder's.

    Args:
        every_n_train_steps: write ``last.ckpt`` every this many optimizer steps (``None`` or 0:
            only after validations and at the end).
        **kwargs: as for ``ModelCheckpoint`` (``dirpath``, ``filename``, ``monitor``, ``mode``,
            ``save_last``, ``save_top_k``...). ``every_n_epochs`` and ``train_time_interval``
            are not supported (validations decide when the best is judged).
    """

    def __init__(self, *args: Any, every_n_train_steps: int | None = None, **kwargs: Any) -> None:
        for unsupported in ("every_n_epochs", "train_time_interval"):
            if kwargs.get(unsupported) is not None:
                raise ValueError(
                    f"callbacks.checkpoint.{unsupported} is not supported by RunCheckpoint; use "
                    "callbacks.checkpoint.every_n_train_steps (and trainer.val_check_interval for the best)"
                )
        if every_n_train_steps is not None and (
            not isinstance(every_n_train_steps, int) or every_n_train_steps < 0
        ):
            raise ValueError(
                f"callbacks.checkpoint.every_n_train_steps={every_n_train_steps!r} must be a positive "
                "number of optimizer steps (or null)"
            )
        # One best file needs no versions: it is replaced (a constant `filename` with more kept needs them).
        kwargs.setdefault("enable_version_counter", kwargs.get("save_top_k", 1) not in (0, 1))
        super().__init__(*args, **kwargs)
        self.every_n_train_steps = every_n_train_steps or 0
        self._last_saved_step: int | None = None  # global step of the latest last.ckpt
        self._best_judged_step: int | None = None  # global step the best was last judged at
        self._resumed_from: str | None = None  # the checkpoint this fit continues, if any

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        with warnings.catch_warnings():
            if trainer.ckpt_path is not None:  # a resumed run: the folder holds its own checkpoints
                warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
            super().setup(trainer, pl_module, stage)

    # -- when --------------------------------------------------------------------------------------
    @staticmethod
    def _may_save(trainer: L.Trainer) -> bool:
        return not (trainer.fast_dev_run or trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking)

    @staticmethod
    def _validates_after_this_batch(trainer: L.Trainer) -> bool:
        """Whether the fit loop runs a validation right after the current batch (whose end saves)."""
        loop = trainer.fit_loop
        try:
            return bool(loop.epoch_loop._should_check_val_fx(loop._data_fetcher))
        except Exception:  # private Lightning API: if it moves, save now (at worst twice)
            return False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        n = self.every_n_train_steps
        if not n or not self._may_save(trainer) or trainer.global_step % n:
            return
        if trainer.fit_loop._should_accumulate() or self._validates_after_this_batch(trainer):
            return  # mid-accumulation there is no new step; a validation's end saves instead
        self.save_last_now(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._may_save(trainer) and self._should_save_on_train_epoch_end(trainer):
            self._after_validation(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._may_save(trainer) and not self._should_save_on_train_epoch_end(trainer):
            self._after_validation(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._may_save(trainer):
            self.save_last_now(trainer)

    # -- what --------------------------------------------------------------------------------------
    def _after_validation(self, trainer: L.Trainer) -> None:
        """Judge the best on fresh metrics, then write last (again, if the best record changed)."""
        improved = False
        if self._best_judged_step != trainer.global_step:
            before = (self.best_model_path, self.best_model_score)
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))
            self._best_judged_step = trainer.global_step
            improved = (self.best_model_path, self.best_model_score) != before
        # last.ckpt carries the best-so-far record: rewrite it when that changed at this step,
        # otherwise a resume would compare later scores against an outdated best.
        self.save_last_now(trainer, force=improved)

    def keep_final_validation(self, trainer: L.Trainer) -> str | None:
        """Write ``best.ckpt`` from the end-of-run validation of the final weights when the fit judged
        no best (a run shorter than ``trainer.val_check_interval``, or whose validations came only
        after it); return the best checkpoint's path, if any. Call it right after that validation."""
        if self.best_model_path and Path(self.best_model_path).is_file():
            return self.best_model_path
        if trainer.fast_dev_run or self.save_top_k == 0 or self.monitor not in trainer.callback_metrics:
            return None  # no validation ran (limit_val_batches=0): there is nothing to judge
        self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))
        self._best_judged_step = trainer.global_step
        return self.best_model_path or None

    def save_last_now(self, trainer: L.Trainer, force: bool = False) -> str | None:
        """Write ``last.ckpt`` now (unless it already holds this step); return its path."""
        if not self.save_last:
            return None
        if self._last_saved_step == trainer.global_step and not force and self.last_model_path:
            return self.last_model_path
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        self._last_saved_step = trainer.global_step
        return self.last_model_path

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, Any]) -> None:
        # Only ever one last.ckpt: ckpt_path=last reads that name, never a last-v1.ckpt beside it.
        counter, self._enable_version_counter = self._enable_version_counter, False
        try:
            super()._save_last_checkpoint(trainer, monitor_candidates)
        finally:
            self._enable_version_counter = counter

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "every_n_train_steps": self.every_n_train_steps}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: Any) -> None:
        self._resumed_from = trainer.ckpt_path  # called right before load_state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = {k: v for k, v in state_dict.items() if k != "every_n_train_steps"}
        super().load_state_dict(self._moved_here(state))

    def _moved_here(self, state: dict[str, Any]) -> dict[str, Any]:
        """``state`` with its file names under this ``dirpath`` when the run folder was copied or moved
        here: the resumed checkpoint is in this folder, and so is every file it names from its old one.
        Otherwise (another run's checkpoint continued in a new folder) ``state`` is unchanged.

        Lightning drops the best-so-far record and ``last_model_path`` when the folder differs, and its
        best path keeps pointing into the old folder.
        """
        old, new = state.get("dirpath"), self.dirpath
        resumed = self._resumed_from
        if not old or not new or old == new or not resumed or Path(resumed).resolve().parent != Path(new):
            return state

        def here(path: Any) -> Any:
            if isinstance(path, str) and path and Path(path).parent == Path(old):
                return os.path.join(new, Path(path).name)
            return path

        moved = {
            **state,
            "dirpath": new,
            "best_k_models": {here(k): v for k, v in (state.get("best_k_models") or {}).items()},
        }
        for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
            moved[key] = here(state.get(key))
        named = [moved[k] for k in ("best_model_path", "last_model_path") if moved.get(k)]
        named += list(moved["best_k_models"])
        if named and all(Path(p).is_file() for p in named):
            return moved
        return state  # started from another run's checkpoint in a new folder: Lightning's behaviour
