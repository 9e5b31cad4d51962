"""Sweeps (issue #17): a multirun ends with a summary table of its runs, best first by the task's
monitored metric; train's main() returns that metric (what sweepers optimise); the Optuna preset
composes when its plugin is installed."""

from __future__ import annotations

import json

import pytest
import yaml

from omniformer.sweep import run_labels, summarize, summary_table, sweep_runs, write_summary
from omniformer.train import monitored_value
from tests.helpers.overrides import LM_CLI, replace
from tests.helpers.runs import compose_train, run_main


def fake_run(folder, overrides, monitor="val_acc", mode="max", results=None):
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    config = {"callbacks": {"checkpoint": {"monitor": monitor, "mode": mode}}}
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    if results is not None:
        (folder / "results.json").write_text(json.dumps(results))


@pytest.fixture
def classifier_sweep(tmp_path):
    common = ["task=image_classification", "trainer.max_epochs=2"]
    fake_run(
        tmp_path / "0", [*common, "optim.lr=0.01"], results={"val_acc": 0.5, "steps": 10, "wall_seconds": 3.0}
    )
    fake_run(
        tmp_path / "1",
        [*common, "optim.lr=0.001"],
        results={"val_acc": 0.9, "steps": 10, "wall_seconds": 4.0},
    )
    fake_run(tmp_path / "2", [*common, "optim.lr=0.1"])  # failed: no results.json
    early = {
        "val_acc": 0.7,
        "steps": 6,
        "wall_seconds": 2.5,
        "early_stopped": True,
        "early_stopped_at_step": 6,
    }
    fake_run(tmp_path / "10", [*common, "optim.lr=0.003"], results=early)
    return tmp_path


def test_the_summary_sorts_runs_by_the_monitored_metric(classifier_sweep):
    assert [p.name for p in sweep_runs(classifier_sweep)] == ["0", "1", "2", "10"]
    summary = summarize(classifier_sweep)
    assert summary["metric"] == "val_acc"
    rows = summary["runs"]
    assert [r["job"] for r in rows] == ["1", "10", "0", "2"]  # highest accuracy first, the failed run last
    assert [r["label"] for r in rows][:2] == ["optim.lr=0.001", "optim.lr=0.003"]
    assert rows[1]["status"] == "stopped early at step 6" and rows[3]["value"] is None
    assert rows[0]["overrides"][0] == "task=image_classification"


def test_the_summary_is_written_as_markdown_and_json(classifier_sweep):
    path, table = write_summary(classifier_sweep)
    assert path == classifier_sweep / "sweep_summary.md"
    lines = table.splitlines()
    assert lines[0] == "| # | job | overrides | val_acc (highest first) | steps | wall (s) | status |"
    assert lines[2] == "| 1 | 1 | `optim.lr=0.001` | 0.9000 | 10 | 4.0 | ok |"
    assert lines[-1].startswith("| 4 | 2 | `optim.lr=0.1` | — | — | — | no results.json")
    assert table in path.read_text()
    saved = json.loads((classifier_sweep / "sweep_summary.json").read_text())
    assert [r["rank"] for r in saved["runs"]] == [1, 2, 3, 4]


def test_lower_is_better_for_a_loss_and_labels_fall_back_to_folder_names(tmp_path):
    fake_run(tmp_path / "a", ["x=1"], "val_loss", "min", {"val_loss": 2.0})
    fake_run(tmp_path / "b", ["x=2"], "val_loss", "min", {"val_loss": 1.0})
    assert [r["job"] for r in summarize(tmp_path)["runs"]] == ["b", "a"]
    assert "val_loss (lowest first)" in summary_table(summarize(tmp_path))
    (tmp_path / "c").mkdir()
    assert run_labels([tmp_path / "c"]) == {tmp_path / "c": "c"}


def test_main_returns_the_monitored_metric_for_sweepers():
    results = {"val_loss": 0.7, "val_acc": 0.8, "val_cer": 0.1}
    assert monitored_value(compose_train(["task=image_classification", "data=mnist"]), results) == 0.8
    assert monitored_value(compose_train([]), results) == 0.7


@pytest.mark.slow
def test_a_multirun_runs_every_combination_and_writes_its_summary(tmp_path):
    proc = run_main(
        "omniformer.train",
        "--multirun",
        *replace(LM_CLI, "trainer.max_steps=2", "trainer.val_check_interval=2", "task.sample_tokens=0"),
        "model.depth=1,2",
        "optim.lr=1e-3,3e-4",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert len(list(tmp_path.glob("*/results.json"))) == 4  # one run folder per combination
    assert "Sweep summary" in proc.stdout and "optim.lr=0.001" in proc.stdout
    rows = json.loads((tmp_path / "sweep_summary.json").read_text())["runs"]
    assert sorted(r["job"] for r in rows) == ["0", "1", "2", "3"] and all(r["steps"] == 2 for r in rows)
    assert [r["value"] for r in rows] == sorted(r["value"] for r in rows) and rows[0]["metric"] == "val_loss"
    assert (tmp_path / "sweep_summary.md").is_file()


# -- the Optuna preset (optional: pip install 'omniformer[sweep]') ---------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    "preset, task, direction",
    [
        ("image_classification_optuna", ["task=image_classification", "data=mnist"], "maximize"),
        ("language_modeling_optuna", [], "minimize"),
        ("language_modeling_optuna", ["experiment=transcribe_digits", "data.root=/x"], "minimize"),
    ],
)
def test_the_optuna_presets_optimise_the_monitored_metric(preset, task, direction):
    pytest.importorskip(
        "hydra_plugins.hydra_optuna_sweeper", reason="hydra-optuna-sweeper not installed (omniformer[sweep])"
    )
    from hydra import compose, initialize_config_module

    from omniformer.config import check_train_config

    with initialize_config_module("omniformer.conf", version_base="1.3"):
        cfg = compose("train", overrides=[*task, f"hparams_search={preset}"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == direction
    assert {"max": "maximize", "min": "minimize"}[cfg.callbacks.checkpoint.mode] == direction
    assert set(sweeper.params) == {"optim.lr", "model.dropout", "optim.weight_decay"}
    check_train_config(compose_train([*task, f"hparams_search={preset}"]))


@pytest.mark.slow
def test_an_optuna_sweep_runs_trials_and_summarises_them(tmp_path):
    pytest.importorskip(
        "hydra_plugins.hydra_optuna_sweeper", reason="hydra-optuna-sweeper not installed (omniformer[sweep])"
    )
    proc = run_main(
        "omniformer.train",
        "hparams_search=language_modeling_optuna",
        "hydra.sweeper.n_trials=2",
        *replace(LM_CLI, "trainer.max_steps=2", "trainer.val_check_interval=2", "task.sample_tokens=0"),
        f"hydra.sweep.dir={tmp_path}",
    )
    assert "Sweep summary" in proc.stdout
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    rows = json.loads((tmp_path / "sweep_summary.json").read_text())["runs"]
    assert len(rows) == 2 and best["best_value"] == pytest.approx(rows[0]["value"])
    assert rows[0]["label"].count("optim.lr=") == 1
