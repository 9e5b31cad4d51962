"""Outputs that tell the truth (issue #17): each figure names the weights it was measured on, fresh
runs go to fresh folders, multi-task results name their summed loss and count samples, the composed
config reaches every logger, and a user error is one message (the traceback only on request)."""

from __future__ import annotations

import os
import re
import warnings

import pytest
import yaml

from omniformer.checkpoint import load_checkpoint
from omniformer.results import format_value, print_summary
from omniformer.run_folders import latest_run
from omniformer.train import run
from omniformer.user_errors import is_user_error
from tests.helpers.overrides import LM, LM_CLI, replace
from tests.helpers.paths import REPO
from tests.helpers.runs import read_results, run_main

SHORT = replace(LM, "trainer.max_steps=4", "trainer.val_check_interval=4")
CONF = REPO / "omniformer" / "conf"


# -- which weights ---------------------------------------------------------------------------------------
def test_results_name_the_weights_each_metric_was_measured_on(tiny_mnist_run):
    """Validation measures the final weights, the test the best checkpoint: results.json says which."""
    results = read_results(tiny_mnist_run)
    best = load_checkpoint(tiny_mnist_run / "checkpoints" / "best.ckpt")["global_step"]
    weights = results["weights"]
    assert set(weights) == {k for k in results if k.startswith(("val_", "test_"))}
    assert weights["val_acc"] == weights["val_loss"] == f"last weights (step {results['steps']})"
    assert weights["test_acc"] == weights["test_loss"] == f"best.ckpt (step {best})"


def test_the_table_names_the_weights_and_rounds_sensibly(capsys):
    print_summary(
        {
            "val_loss": 1.769123,
            "val_loss_weighted_sum": 1.769123,
            "test_acc": 0.987654,
            "steps": 3000,
            "wall_seconds": 65.4321,
            "data_wait_fraction": 0.0123,
            "samples_per_sec": 12345.678,
            "parameters": 1234567,
            "weights": {
                "val_loss": "last weights (step 3000)",
                "val_loss_weighted_sum": "last weights (step 3000)",
                "test_acc": "best.ckpt (step 2000)",
            },
        }
    )
    rows = {line.split("│")[1].strip(): line for line in capsys.readouterr().out.splitlines() if "│" in line}
    assert re.search(r"1\.7691 +│ last weights \(step 3000\)", rows["val_loss_weighted_sum"])
    assert "val_loss" not in rows  # the multi-task sum is shown once, under the name that says what it is
    assert re.search(r"0\.9877 +│ best\.ckpt \(step 2000\)", rows["test_acc"])
    shown = {key: row.split("│")[2].strip() for key, row in rows.items()}
    assert shown["steps"] == "3,000" and shown["parameters"] == "1,234,567"
    assert shown["wall_seconds"] == "65.4"
    assert shown["data_wait_fraction"] == "1.2%" and shown["samples_per_sec"] == "12,346"
    assert format_value("x", 0.00001234) == "1.23e-05" and format_value("x", 0.0) == "0.0000"


@pytest.mark.slow
def test_the_cli_labels_the_table_in_train_log_and_logs_the_config_as_hyperparameters(tmp_path):
    run_main("omniformer.train", *LM_CLI, f"hydra.run.dir={tmp_path}")
    table = (tmp_path / "train.log").read_text().split("omniformer results")[1]
    assert re.search(r"val_loss +│ \d+\.\d{4} +│ last weights \(step 6\)", table)
    hparams = yaml.safe_load((tmp_path / "logs" / "hparams.yaml").read_text())  # was {}
    assert hparams["model.dim"] == 32 and hparams["trainer.max_steps"] == 6 and hparams["seed"] == 1337
    assert any(key.startswith("data_spec.") for key in hparams)  # filled in at run time, resolved


# -- fresh runs, fresh folders ---------------------------------------------------------------------------
def test_a_folder_with_no_run_in_it_is_used_as_given(tmp_path):
    (tmp_path / "corpus.txt").write_text("not a run")
    (tmp_path / "logs").mkdir()  # empty: a run that failed before writing anything
    assert run(SHORT, tmp_path)["steps"] == 4


def test_presets_give_every_run_its_own_folder():
    pinned = {}
    for preset in sorted((CONF / "experiment").glob("*.yaml")):
        hydra = (yaml.safe_load(preset.read_text()) or {}).get("hydra") or {}
        if (hydra.get("run") or {}).get("dir") is not None:
            pinned[preset.stem] = hydra["run"]["dir"]
    assert len(pinned) >= 8
    for name, run_dir in pinned.items():
        assert run_dir.startswith(f"outputs/experiments/{name}/") and "${now:" in run_dir, name


def test_latest_run_finds_the_newest_run_of_a_preset(tmp_path):
    root = tmp_path / "multitask_text_lm"
    with pytest.raises(ValueError, match=r"no run under .* has written checkpoints/last.ckpt yet"):
        latest_run(str(root))
    for age, name in enumerate(["2026-01-02_00-00-00", "2026-01-01_00-00-00", "."]):
        last = root / name / "checkpoints" / "last.ckpt"
        last.parent.mkdir(parents=True, exist_ok=True)
        last.write_bytes(b"x")
        os.utime(last, (1e9 - age * 100, 1e9 - age * 100))
    (root / "2026-01-03_00-00-00").mkdir()  # started, no checkpoint yet
    assert latest_run(str(root)) == str(root / "2026-01-02_00-00-00")


def test_the_transfer_preset_starts_from_the_newest_text_lm_run(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from omniformer.run_folders import register_resolvers
    from tests.helpers.runs import compose_train

    register_resolvers()
    last = tmp_path / "outputs/experiments/multitask_text_lm/2026-01-01_00-00-00/checkpoints/last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    cfg = compose_train(["experiment=transfer_mnist_text_frozen"])
    assert OmegaConf.select(cfg, "model.backbone.init_from") == str(last.relative_to(tmp_path))


# -- TensorBoard -----------------------------------------------------------------------------------------
def test_tensorboard_without_the_package_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setattr("omniformer.loggers.tensorboard_installed", lambda: False)
    args = [*SHORT, "logger=tensorboard", f"hydra.run.dir={tmp_path}"]
    proc = run_main("omniformer.train", *args, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "needs the tensorboard package, which is not installed" in proc.stderr
    assert "pip install 'omniformer[tensorboard]'" in proc.stderr
    assert not (tmp_path / "checkpoints").exists()
    pyproject = (REPO / "pyproject.toml").read_text()  # (tomllib is Python 3.11+)
    dependencies = pyproject.split("dependencies = [", 1)[1].split("]", 1)[0]
    assert "tensorboard" not in dependencies  # an extra, not a default dependency
    assert '\ntensorboard = ["tensorboard>=' in pyproject.split("[project.optional-dependencies]")[1]


# -- user errors -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_user_error_is_one_message_and_the_traceback_comes_on_request(tmp_path, monkeypatch):
    missing = tmp_path / "nope.ckpt"
    args = [*SHORT, f"ckpt_path={missing}", f"hydra.run.dir={tmp_path / 'run'}"]
    proc = run_main("omniformer.train", *args, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"ckpt_path: checkpoint {missing} does not exist" in proc.stderr
    assert "HYDRA_FULL_ERROR=1 for a complete stack trace" in proc.stderr  # Hydra's own hint
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_main("omniformer.train", *args, check=False)


def test_errors_raised_inside_libraries_keep_their_traceback():
    from omniformer.tasks.optim import OptimSettings

    def library_bug():
        raise ValueError("shapes do not match")

    with pytest.raises(ValueError) as ours:
        OptimSettings(warmup_steps=2.5)
    with pytest.raises(ValueError) as theirs:
        library_bug()
    assert is_user_error(ours.value) and not is_user_error(theirs.value)


# -- eval ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_eval_prints_each_metric_once_without_leafspec_warnings(tiny_lm_checkpoint, tmp_path):
    from omniformer.evaluate import evaluate

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        evaluate(str(tiny_lm_checkpoint), "val", out_dir=str(tmp_path / "py"), figures=False)
    assert not [w for w in caught if "LeafSpec" in str(w.message)]
    proc = run_main(
        "omniformer.evaluate", f"ckpt={tiny_lm_checkpoint}", "split=val", f"out_dir={tmp_path / 'cli'}"
    )
    printed = [line.split(":")[0] for line in proc.stdout.splitlines() if re.match(r"^[\w/]+: ", line)]
    assert printed.count("val_loss") == 1 and "LeafSpec" not in proc.stderr
