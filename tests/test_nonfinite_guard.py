"""NonFiniteGuard reading its flags every N optimizer steps (one host synchronisation per N steps on a
GPU): the bad update is still dropped at its own step, the error and the warnings name the bad step,
no checkpoint is written after an unreported bad step. On the CPU, and for an optimizer that cannot
drop its own update, it checks every step."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from omniformer.callbacks import NonFiniteGuard, NonFiniteLossError
from omniformer.checkpoint import load_checkpoint
from omniformer.tasks import OmniTask, OptimSettings
from omniformer.train import run
from tests.helpers.callbacks import nan_at
from tests.helpers.overrides import LM
from tests.helpers.regression import TinyTask, fit, regression_loader


class NaNTask(TinyTask):
    """TinyTask whose loss is NaN at the given optimizer steps; keeps the weights at each step start."""

    def __init__(self, nan_steps: tuple[int, ...], optim: OptimSettings | None = None) -> None:
        super().__init__(optim)
        self.nan_steps = set(nan_steps)
        self.weights_at: dict[int, list[torch.Tensor]] = {}

    def training_step(self, batch, batch_idx):
        self.weights_at[self.trainer.global_step] = [p.detach().clone() for p in self.parameters()]
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if self.trainer.global_step in self.nan_steps else loss

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        OmniTask.configure_gradient_clipping(self, optimizer, gradient_clip_val, gradient_clip_algorithm)


def count_reads(guard: NonFiniteGuard) -> NonFiniteGuard:
    """Make ``guard.reads`` list how many flags each host read of the guard found (the real read
    still runs: this counts the synchronisations the interval is there to save)."""
    guard.reads, real_read = [], guard._read
    guard._read = lambda trainer: (guard.reads.append(len(guard._flags)), real_read(trainer))[-1]
    return guard


def guarded_fit(task: NaNTask, guard: NonFiniteGuard, steps: int = 10) -> NonFiniteGuard:
    fit(task, steps=steps, callbacks=[count_reads(guard)], gradient_clip_val=1.0)
    return guard


def seeded_task(nan_steps: tuple[int, ...]) -> NaNTask:
    torch.manual_seed(0)
    return NaNTask(nan_steps)


def weights(task) -> list[torch.Tensor]:
    return [p.detach().clone() for p in task.parameters()]


def test_on_the_cpu_the_guard_checks_every_step_and_rejects_a_bad_interval():
    guard = guarded_fit(NaNTask(()), NonFiniteGuard(), steps=3)
    assert guard.every == 1
    with pytest.raises(ValueError, match=r"check_every_n_steps=0 must be >= 1"):
        NonFiniteGuard(check_every_n_steps=0)


def test_an_optimizer_that_cannot_drop_its_own_update_is_checked_every_step():
    task = NaNTask((), OptimSettings(fused=False))
    guard = guarded_fit(task, NonFiniteGuard(check_every_n_steps=4), steps=3)
    assert guard.every == 1


def test_skip_every_n_steps_learns_exactly_what_checking_every_step_learns(caplog):
    bad = (2, 5)
    every_step, every_four = seeded_task(bad), seeded_task(bad)
    guarded_fit(every_step, NonFiniteGuard("skip", check_every_n_steps=1))
    guard = guarded_fit(every_four, NonFiniteGuard("skip", check_every_n_steps=4))
    assert guard.every == 4 and guard.skipped == 2
    assert guard.reads == [4, 4, 2]  # steps 0-3, 4-7, then the last two when training ended
    for a, b in zip(weights(every_step), weights(every_four)):
        assert torch.equal(a, b)  # the bad updates were dropped on the device, moments included
    assert torch.equal(every_four.weights_at[2][0], every_four.weights_at[3][0])
    warnings = [r.getMessage() for r in caplog.records if "step skipped" in r.getMessage()]
    assert "non-finite loss or gradient at training step 5 (epoch 1, batch 1; read at step 8" in warnings[-1]


def test_stop_every_n_steps_names_the_bad_step_and_freezes_the_weights_until_the_error():
    task = NaNTask((3,))
    with pytest.raises(NonFiniteLossError) as caught:
        guarded_fit(task, NonFiniteGuard("stop", check_every_n_steps=100), steps=7)
    message = str(caught.value)
    assert "non-finite loss or gradient at training step 3 (epoch 0, batch 3; read at step 7" in message
    assert "not updated with it (nor with any step after it)" in message
    for step in (4, 5, 6):  # no update after the bad step, though its error came at the end
        assert all(torch.equal(a, b) for a, b in zip(task.weights_at[3], task.weights_at[step]))
    assert all(torch.equal(a, b) for a, b in zip(task.weights_at[3], weights(task)))
    assert not any(hasattr(o, "found_inf") for o in task.trainer.optimizers)


def test_skip_every_n_steps_still_stops_after_max_skips_naming_the_step():
    match = r"at training step 5 .*more than callbacks\.nonfinite\.max_skips=1"
    with pytest.raises(NonFiniteLossError, match=match):
        guarded_fit(NaNTask((2, 5)), NonFiniteGuard("skip", max_skips=1, check_every_n_steps=4))


def test_flags_are_read_before_a_checkpoint_is_written(tmp_path):
    task = NaNTask((1,))
    guard = NonFiniteGuard("skip", check_every_n_steps=100)
    save = L.pytorch.callbacks.ModelCheckpoint(tmp_path, every_n_train_steps=3, save_last=False)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=3, logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[save, guard],
    )  # fmt: skip
    trainer.fit(task, regression_loader())
    saved = torch.load(next(tmp_path.glob("*.ckpt")), weights_only=True)
    assert saved["callbacks"][guard.state_key] == {"skipped": 1}


def test_stop_every_n_steps_writes_no_checkpoint_after_the_bad_step(tmp_path):
    task = NaNTask((1,))
    save = L.pytorch.callbacks.ModelCheckpoint(tmp_path, every_n_train_steps=3, save_last=False)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=6, logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[save, NonFiniteGuard("stop", check_every_n_steps=100)],
    )  # fmt: skip
    with pytest.raises(NonFiniteLossError, match=r"at training step 1 .*read at step 3"):
        trainer.fit(task, regression_loader())
    assert list(tmp_path.glob("*.ckpt")) == []


def test_a_run_reading_the_flags_every_n_steps_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    tmp_path,
):
    every = ["+callbacks.nonfinite.check_every_n_steps=50"]
    with pytest.raises(NonFiniteLossError) as caught:
        run([*LM, "trainer.max_steps=8", *nan_at(4), *every], tmp_path)  # last.ckpt every 3 steps
    message = str(caught.value)
    assert "non-finite loss or gradient at training step 4 (epoch 0, batch 4; read at step 6" in message
    assert f"The last good checkpoint is {tmp_path}/checkpoints/last.ckpt" in message
    checkpoint = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 4  # the save at step 6 read the flags first and was not written
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values())


def test_with_a_gradient_scaler_the_guard_reads_the_loss_flags_every_n_steps():
    scaled = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=1.0))
    guard, task = count_reads(NonFiniteGuard("skip", check_every_n_steps=3)), NaNTask((1,))
    fit(task, steps=5, plugins=[scaled], callbacks=[guard], gradient_clip_val=1.0)
    assert guard.every == 3 and guard.reads == [3, 2] and guard.skipped == 1
    assert all(torch.isfinite(p).all() for p in task.parameters())
