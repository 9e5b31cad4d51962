"""The progress bar omniformer-train shows: StepProgressBar, which counts steps in a step-based run."""

from __future__ import annotations

import io

import lightning as L

from omniformer.callbacks import StepProgressBar
from omniformer.train import build_callbacks
from tests.helpers.regression import TinyTask, fit
from tests.helpers.runs import compose_train


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
    callbacks = build_callbacks(compose_train(["callbacks.checkpoint=null"]))
    bars = [c for c in callbacks if isinstance(c, L.pytorch.callbacks.RichProgressBar)]
    assert len(bars) == 1 and type(bars[0]) is StepProgressBar and bars[0].refresh_rate == 10
