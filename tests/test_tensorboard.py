"""logger=tensorboard end to end: a short training run writes event files that TensorBoard reads, with
the logged scalars (named parameter groups' learning rates among them) and the config as hyperparameters."""

from __future__ import annotations

import pytest

from tests.helpers.overrides import LM, replace
from tests.helpers.runs import run_main

pytest.importorskip("tensorboard", reason="needs the tensorboard extra: pip install -e '.[tensorboard]'")

from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
from tensorboard.plugins.hparams import plugin_data_pb2


def hparams_plugin_data(multiplexer: EventMultiplexer) -> dict[str, plugin_data_pb2.HParamsPluginData]:
    """The HParams plugin's summaries of every run in ``multiplexer``, by tag."""
    content = multiplexer.PluginRunToTagToContent("hparams")
    return {
        tag: plugin_data_pb2.HParamsPluginData.FromString(raw)
        for tags in content.values()
        for tag, raw in tags.items()
    }


@pytest.mark.slow  # trains 4 steps through omniformer-train's main() (about 2 s)
def test_a_tensorboard_run_writes_scalars_and_the_config_as_hparams(tmp_path):
    run = tmp_path / "run"
    args = replace(LM, "trainer.max_steps=4", "trainer.val_check_interval=4")
    run_main("omniformer.train", *args, "logger=tensorboard", f"hydra.run.dir={run}")
    assert (run / "logs" / "metrics.csv").is_file()  # the CSV logger is kept beside (omniformer-plot)
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))

    multiplexer = EventMultiplexer().AddRunsFromDirectory(str(run / "tensorboard"))
    multiplexer.Reload()
    scalars = {tag for tags in multiplexer.Runs().values() for tag in tags["scalars"]}
    assert {"train_loss", "val_loss", "val_ppl", "lr-AdamW/decay", "lr-AdamW/no_decay"} <= scalars
    assert "hp_metric" not in scalars  # no -1 placeholder
    (run_name,) = {name for name, tags in multiplexer.Runs().items() if "train_loss" in tags["scalars"]}
    losses = multiplexer.Scalars(run_name, "train_loss")
    assert [event.step for event in losses] == [0, 1, 2, 3]

    plugin = hparams_plugin_data(multiplexer)
    hparams = plugin["_hparams_/session_start_info"].session_start_info.hparams
    assert hparams["optim.lr"].number_value == pytest.approx(1e-3)
    assert hparams["model.dim"].number_value == 32
    assert hparams["task._target_"].string_value == "omniformer.tasks.LanguageModelingTask"
    columns = [info.name.tag for info in plugin["_hparams_/experiment"].experiment.metric_infos]
    assert columns == ["val_loss"]  # the language model's monitored metric


def test_the_hparams_columns_are_the_metrics_named(tmp_path):
    """A classifier's HParams columns: its monitored val_acc, then val_loss; values that are not numbers,
    strings or booleans (None, lists) are shown as text."""
    from lightning.pytorch.loggers import TensorBoardLogger

    from omniformer.loggers import log_config

    logger = TensorBoardLogger(tmp_path, name="tb", version="", default_hp_metric=False)
    log_config(
        [logger],
        {"optim": {"lr": 0.1}, "ckpt_path": None, "model": {"betas": [0.9, 0.99]}},
        ["val_acc", "val_loss"],
    )
    logger.finalize("success")
    multiplexer = EventMultiplexer().AddRunsFromDirectory(str(tmp_path / "tb"))
    multiplexer.Reload()
    plugin = hparams_plugin_data(multiplexer)
    assert [info.name.tag for info in plugin["_hparams_/experiment"].experiment.metric_infos] == [
        "val_acc",
        "val_loss",
    ]
    hparams = plugin["_hparams_/session_start_info"].session_start_info.hparams
    assert hparams["optim.lr"].number_value == pytest.approx(0.1)
    assert (hparams["ckpt_path"].string_value, hparams["model.betas"].string_value) == ("None", "[0.9, 0.99]")
