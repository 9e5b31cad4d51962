"""Fixes on the GPU training path, checked on the CPU: clipping with a fused optimizer under mixed
precision, the per-step seed, the non-finite guard's checking interval, pinned memory, the progress bar.
"""

from __future__ import annotations

import io
import random
import warnings
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from omniformer.callbacks import NonFiniteGuard, NonFiniteLossError, StepProgressBar, StepSeed
from omniformer.resume import mix_seed
from omniformer.tasks import OmniTask, OptimSettings
from omniformer.tasks.optim import build_optimizer

LIGHTNING_PYTREE = "lightning.pytorch.utilities._pytree"


# -- gradient clipping with fused AdamW under mixed precision -------------------------------------------
class TinyTask(OmniTask):
    """Regression with a large loss (gradients far above the clip value); records the gradients
    just before and just after clipping."""

    def __init__(self, optim: OptimSettings | None = None) -> None:
        net = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 1))
        super().__init__(net, optim or OptimSettings())
        self.before: list[list[torch.Tensor]] = []
        self.after: list[list[torch.Tensor]] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        return 100.0 * nn.functional.mse_loss(self.net(x).float(), y)

    def _grads(self, optimizer) -> list[torch.Tensor]:
        return [p.grad.detach().float().clone() for g in optimizer.param_groups for p in g["params"]]

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        self.before.append(self._grads(optimizer))
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        self.after.append(self._grads(optimizer))


def regression_loader() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 8, generator=generator)
    return DataLoader(TensorDataset(x, 5 * x.sum(1, keepdim=True)), batch_size=8)


def fit(task: TinyTask, steps: int = 4, **trainer_args) -> L.Trainer:
    options = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=steps, enable_model_summary=False, **{**options, **trainer_args}
    )
    trainer.fit(task, regression_loader())
    return trainer


def global_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def test_bf16_mixed_with_fused_adamw_trains_and_clips_by_norm():
    task = TinyTask()
    trainer = fit(task, precision="bf16-mixed", gradient_clip_val=1.0)
    assert trainer.global_step == 4
    assert trainer.optimizers[0].defaults["fused"] is True  # the combination Lightning refused
    for before, after in zip(task.before, task.after):
        norm = global_norm(before)
        assert norm > 1.0  # clipping had something to do
        scale = 1.0 / (norm + 1e-6)  # what clip_grad_norm_ multiplies by
        for b, a in zip(before, after):
            torch.testing.assert_close(a, b * scale)
        assert global_norm(after) == pytest.approx(1.0, rel=1e-4)
    assert all(torch.isfinite(p).all() for p in task.parameters())


def test_bf16_mixed_with_fused_adamw_clips_by_value():
    task = TinyTask()
    fit(task, steps=2, precision="bf16-mixed", gradient_clip_val=0.01, gradient_clip_algorithm="value")
    for before, after in zip(task.before, task.after):
        assert max(float(b.abs().max()) for b in before) > 0.01
        for b, a in zip(before, after):
            torch.testing.assert_close(a, b.clamp(-0.01, 0.01))


def test_without_clipping_gradients_are_left_alone():
    task = TinyTask()
    fit(task, steps=2, precision="bf16-mixed", gradient_clip_val=None)
    for before, after in zip(task.before, task.after):
        for b, a in zip(before, after):
            assert torch.equal(a, b)


def test_a_gradient_scaler_with_clipping_gets_unfused_adamw_which_lightning_unscales_then_clips():
    # 16-mixed with a GradScaler (what CUDA gets); the CPU has a GradScaler too
    scaled = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=1.0))
    task = TinyTask()
    trainer = fit(task, plugins=[scaled], gradient_clip_val=1.0)
    assert trainer.optimizers[0].defaults["fused"] is False
    finite = [a for a in task.after if all(torch.isfinite(g).all() for g in a)]  # the scaler skips the rest
    assert finite and all(global_norm(a) <= 1.0 + 1e-3 for a in finite)  # unscaled, then clipped


def test_fused_true_with_a_gradient_scaler_and_clipping_is_refused_with_the_way_out():
    net = nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"optim\.fused=true cannot be combined .* Set optim\.fused=null"):
        build_optimizer(net, OptimSettings(fused=True), 10, clips_scaled_grads=True)
    fused = [
        build_optimizer(net, OptimSettings(), 10, clips_scaled_grads=scaled)["optimizer"].defaults["fused"]
        for scaled in (False, True)
    ]
    assert fused == [True, False]


# -- pinned memory for the text loaders -------------------------------------------------------------------
@pytest.mark.parametrize("cuda", [False, True])
def test_text_loaders_pin_memory_when_cuda_is_available(monkeypatch, cuda):
    from omniformer.data.text import TextDataModule
    from tests.test_text_classification import small

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    language = TextDataModule(tokenizer="char", block_size=16, batch_size=4)
    reviews = small()
    for data in (language, reviews):
        data.setup("fit")
        for loader in (data.train_dataloader(), data.val_dataloader()):
            assert loader.pin_memory is cuda, type(data).__name__


# -- StepSeed: cheap per-step seeding, same randomness ----------------------------------------------------
def step_seed_draws(batch: int, seed: int = 7, device: str = "cpu") -> tuple:
    """What a training step draws after ``StepSeed`` ran for batch ``batch``: dropout, random, NumPy."""
    trainer = SimpleNamespace(global_rank=0, fit_loop=SimpleNamespace(total_batch_idx=batch))
    StepSeed(seed).on_train_batch_start(trainer, SimpleNamespace(device=torch.device(device)), None, batch)
    mask = nn.functional.dropout(torch.ones(64), 0.5, training=True)
    return mask, random.random(), float(np.random.rand())


def test_step_seed_gives_the_same_randomness_for_the_same_seed_and_step():
    first = step_seed_draws(5)
    torch.rand(100)  # whatever ran in between
    random.random()
    np.random.rand(3)
    again = step_seed_draws(5)
    assert torch.equal(first[0], again[0]) and first[1:] == again[1:]
    other = step_seed_draws(6)
    assert not torch.equal(first[0], other[0]) and first[1] != other[1] and first[2] != other[2]
    assert not torch.equal(first[0], step_seed_draws(5, seed=8)[0])


def test_step_seed_draws_what_torch_manual_seed_drew():
    # the same numbers as before it stopped calling torch.manual_seed: old checkpoints resume alike
    fast = step_seed_draws(3)
    seed = mix_seed(7, 0, 3)
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    assert torch.equal(fast[0], nn.functional.dropout(torch.ones(64), 0.5, training=True))
    assert fast[1:] == (random.random(), float(np.random.rand()))


def test_step_seed_seeds_cuda_only_once_initialised_and_other_backends_through_manual_seed(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda s: calls.append(("cuda", s)))
    monkeypatch.setattr(torch, "manual_seed", lambda s: calls.append(("all", s)))
    seed = mix_seed(7, 0, 4)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    step_seed_draws(4)
    assert calls == []  # CPU only: no lazy CUDA seeding queued
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    step_seed_draws(4, device="cuda")
    assert calls == [("cuda", seed)]
    step_seed_draws(4, device="mps")
    assert calls == [("cuda", seed), ("all", seed)]


# -- NonFiniteGuard: reading the flags every N steps ------------------------------------------------------
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
    """Make ``guard.reads`` list how many flags each host read of the guard found."""
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
    from omniformer.checkpoint import load_checkpoint
    from omniformer.train import run
    from tests.test_crash_safety import nan_at
    from tests.test_resume import LM

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


# -- progress bar and warnings ----------------------------------------------------------------------------
def rendered_bar(**trainer_args) -> str:
    """What the progress bar printed while TinyTask trained (a rich console writing to a string)."""
    screen = io.StringIO()
    bar = StepProgressBar(console_kwargs={"file": screen, "force_terminal": True, "width": 200})
    fit(TinyTask(), callbacks=[bar], enable_progress_bar=True, **trainer_args)
    return screen.getvalue()


def test_a_step_based_run_shows_the_epoch_and_the_step_not_epoch_0_of_minus_2():
    shown = rendered_bar(steps=6, max_epochs=-1)
    assert "Epoch 1" in shown and "/-2" not in shown
    assert "step: 6/6" in shown
    shown = rendered_bar(steps=-1, max_epochs=2)  # bounded by epochs: as in Lightning
    assert "Epoch 1/1" in shown and "step:" not in shown


def test_the_default_progress_bar_is_the_step_progress_bar():
    from omniformer.train import build_callbacks
    from tests.conftest import compose_train

    callbacks = build_callbacks(compose_train(["callbacks.checkpoint=null"]))
    bars = [c for c in callbacks if isinstance(c, L.pytorch.callbacks.RichProgressBar)]
    assert len(bars) == 1 and type(bars[0]) is StepProgressBar and bars[0].refresh_rate == 10


def test_only_the_lightning_leafspec_deprecation_warning_is_silenced():
    from lightning.pytorch.utilities._pytree import _tree_flatten

    from omniformer.train import silence_known_warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_known_warnings()
        _tree_flatten({"loss": 1.0})  # builds a LeafSpec inside lightning
        text = "`isinstance(treespec, LeafSpec)` is deprecated, use ..."
        warnings.warn_explicit(text, FutureWarning, "elsewhere.py", 1, module="elsewhere")
        warnings.warn_explicit("something else", FutureWarning, "_pytree.py", 21, module=LIGHTNING_PYTREE)
    assert sorted(str(w.message) for w in caught) == sorted([text, "something else"])


def test_under_fsdp_the_norm_is_clipped_by_the_root_modules_own_clip_grad_norm():
    """Lightning's FSDP precision refuses norm clipping; the task hands it to the FSDP root module
    (whose ``clip_grad_norm_`` reduces across ranks). FSDP cannot run on a CPU, so the strategy is a
    stand-in of the real class with a recording root module."""
    from lightning.pytorch.strategies import FSDPStrategy

    calls = []
    root = SimpleNamespace(clip_grad_norm_=calls.append)
    strategy = FSDPStrategy.__new__(FSDPStrategy)
    strategy._model, strategy._lightning_module = root, None  # what setup() leaves: the FSDP root

    task = OmniTask(nn.Linear(2, 1), OptimSettings())
    task._trainer = SimpleNamespace(strategy=strategy, precision_plugin=None)
    optimizer = torch.optim.SGD(task.parameters(), lr=0.1)
    task.configure_gradient_clipping(optimizer, gradient_clip_val=0.5, gradient_clip_algorithm="norm")
    assert calls == [0.5]
