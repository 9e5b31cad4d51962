"""Early stopping (issue #17): off by default, on with one override, watching the task's monitored
metric; results.json says whether and when it stopped; bad settings fail naming the key."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from omniformer.config import ConfigError, check_train_config
from omniformer.early_stopping import EarlyStop
from omniformer.train import run
from tests.helpers.overrides import LM, replace
from tests.helpers.runs import compose_train, read_results


@pytest.mark.parametrize(
    "overrides, monitor, mode",
    [
        ([], "val_loss", "min"),
        (["task=image_classification", "data=mnist"], "val_acc", "max"),
        (["task=prefix_lm", "data=spoken_digit_utterances"], "val_cer", "min"),
    ],
)
def test_it_watches_what_the_task_monitors_and_is_off_by_default(overrides, monitor, mode):
    cfg = compose_train(overrides)
    node = cfg.callbacks.early_stopping
    assert (node.monitor, node.mode, node.patience) == (monitor, mode, None)
    assert node.monitor == cfg.callbacks.checkpoint.monitor
    callback = instantiate(node)
    assert isinstance(callback, EarlyStop) and not callback.enabled and callback.results() == {}
    preset = compose_train([*overrides, "callbacks=early_stopping"]).callbacks.early_stopping
    assert (preset.monitor, preset.mode, preset.patience) == (monitor, mode, 5)


def test_a_default_run_records_no_early_stopping(tiny_lm_run):
    assert "early_stopped" not in read_results(tiny_lm_run)


@pytest.mark.slow
def test_a_run_that_stops_improving_stops_and_says_when(tmp_path):
    # min_delta 10: no validation after the first improves val_loss "enough"; validation every 4 steps
    overrides = [*LM, "callbacks.early_stopping.patience=1", "callbacks.early_stopping.min_delta=10"]
    results = run(overrides, tmp_path / "stopped")
    assert results["steps"] == 8 and results["early_stopped"] is True
    assert results["early_stopped_at_step"] == 8
    assert read_results(tmp_path / "stopped")["early_stopped_at_step"] == 8
    assert (tmp_path / "stopped" / "checkpoints" / "best.ckpt").is_file()
    # the preset's patience (5) outlasts the 3 validations of a 12-step run
    results = run(replace(LM, "callbacks=early_stopping"), tmp_path / "patient")
    assert results["steps"] == 12 and results["early_stopped"] is False
    assert "early_stopped_at_step" not in results and results["early_stopping_best"] > 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "override, message",
    [
        ("patience=0", r"patience=0: give a whole number >= 1"),
        ("mode=up", r"mode='up': choose 'min'"),
        ("min_delta=-1", r"min_delta=-1 must be >= 0"),
        ("monitor=val_acc", r"monitor='val_acc': LanguageModelingTask logs val_loss"),
        ("patiense=3", r"patiense=3: unknown key"),
    ],
)
def test_bad_settings_fail_naming_the_key(override, message):
    plus = "+" if override.startswith("patiense") else ""
    with pytest.raises(ConfigError, match=rf"callbacks\.early_stopping\.{message}"):
        check_train_config(compose_train([f"{plus}callbacks.early_stopping.{override}"]))


def test_a_resumed_run_keeps_its_own_patience():
    stopper = EarlyStop(patience=4)
    stopper.load_state_dict({**EarlyStop(patience=None).state_dict(), "stopped_step": None})
    assert stopper.patience == 4 and stopper.enabled
    assert stopper.results() == {"early_stopped": False}
