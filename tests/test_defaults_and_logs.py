"""Defaults that fit the run and logs a user can read (issue #17): warmup fitted to the run's length,
a required data path, ``best.ckpt`` after every run that validates, progress lines outside a terminal,
and no notices a user cannot act on."""

from __future__ import annotations

import logging
import sys

import pytest
from torch import nn

from omniformer.tasks.optim import OptimSettings, build_optimizer
from omniformer.train import run
from tests.helpers.data import image_folder
from tests.helpers.overrides import LM, LM_CLI, image_args
from tests.helpers.runs import run_main


def _warmup(settings: OptimSettings, total: int) -> int:
    scheduler = build_optimizer(nn.Linear(2, 2), settings, total)["lr_scheduler"]["scheduler"]
    return scheduler.lr_lambdas[0].warmup_steps


def test_a_fractional_warmup_is_that_share_of_the_run(caplog):
    with caplog.at_level(logging.WARNING, logger="omniformer"):
        assert _warmup(OptimSettings(warmup_steps=0.1), 115) == 12
        assert _warmup(OptimSettings(warmup_steps=0.001), 115) == 1  # at least one step
        assert _warmup(OptimSettings(warmup_steps=100), 1500) == 100  # whole numbers stay steps
    assert not caplog.records


def test_a_warmup_longer_than_the_run_is_capped_with_a_warning_naming_both_numbers(caplog):
    """A 300-step warmup in a 115-step run never ended: the lr was still rising at the last step."""
    with caplog.at_level(logging.WARNING, logger="omniformer"):
        assert _warmup(OptimSettings(warmup_steps=300), 115) == 115
    (record,) = caplog.records
    assert "optim.warmup_steps=300" in record.getMessage() and "115" in record.getMessage()


def test_a_warmup_that_is_neither_steps_nor_a_fraction_is_named():
    with pytest.raises(ValueError, match="warmup_steps"):
        OptimSettings(warmup_steps=2.5)


def test_textfile_without_a_path_fails_naming_data_path(tmp_path):
    """``data=textfile`` alone trained on the bundled Shakespeare: the ``???`` was lost when
    textfile.yaml was merged over shakespeare.yaml."""
    proc = run_main("omniformer.train", "data=textfile", f"hydra.run.dir={tmp_path}", check=False)
    assert proc.returncode != 0
    assert "data.path is required" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "vocab.json").exists()  # stopped before any data was read


@pytest.mark.slow
def test_a_run_shorter_than_its_validation_interval_writes_best_ckpt_and_eval_reads_it(tmp_path):
    """A 3-step run with validations every 500 steps validated only at the end and wrote no best.ckpt:
    ``omniformer-eval ckpt=.../best.ckpt`` died with a traceback."""
    run_dir = tmp_path / "run"
    run([*LM, "trainer.max_steps=3", "trainer.val_check_interval=500"], run_dir)
    best = run_dir / "checkpoints" / "best.ckpt"
    assert best.is_file()
    proc = run_main("omniformer.evaluate", f"ckpt={best}", "split=val", "figures=false")
    assert "val_loss" in proc.stdout


def test_an_epoch_based_image_run_writes_best_ckpt(tmp_path):
    run([*image_args(image_folder(tmp_path / "images")), "trainer.max_epochs=1"], tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file()


@pytest.mark.slow
def test_a_run_that_never_validates_says_so_when_best_ckpt_is_asked_for(tmp_path):
    run_dir = tmp_path / "run"
    results = run([*LM, "trainer.max_steps=2", "trainer.limit_val_batches=0"], run_dir)
    assert "val_loss" not in results and not (run_dir / "checkpoints" / "best.ckpt").exists()
    best = run_dir / "checkpoints" / "best.ckpt"
    proc = run_main("omniformer.evaluate", f"ckpt={best}", "split=val", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "never validated" in proc.stderr and "last.ckpt" in proc.stderr


def test_outside_a_terminal_progress_lines_give_step_loss_throughput_and_eta(tmp_path, caplog):
    """Under nohup or SLURM nothing was printed between the model summary and the end of the run."""
    overrides = [*LM, "trainer.max_steps=6", "callbacks.progress_log.every_n_steps=2"]
    with caplog.at_level(logging.INFO, logger="omniformer"):
        run(overrides, tmp_path / "run")  # pytest's stdout is not a terminal
    lines = [r.getMessage() for r in caplog.records if r.name == "omniformer"]
    steps = [line for line in lines if line.startswith("step ")]
    assert [line.split()[1] for line in steps] == ["2/6", "4/6", "6/6"]
    assert all("train_loss" in line and "tokens/s" in line and "ETA" in line for line in steps)
    assert any(line.startswith("validation at step 4/6: val_loss") for line in lines)


def test_in_a_terminal_the_bar_alone_shows_progress(monkeypatch):
    from omniformer.progress_log import ProgressLog

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert not ProgressLog().enabled and ProgressLog(enabled=True).enabled
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert ProgressLog().enabled


@pytest.mark.slow
def test_train_log_holds_the_progress_lines_and_the_results_table(tmp_path):
    run_main(
        "omniformer.train", *LM_CLI, "callbacks.progress_log.every_n_steps=2", f"hydra.run.dir={tmp_path}"
    )
    log_text = (tmp_path / "train.log").read_text()
    assert "step 2/6" in log_text and "validation at step 3/6" in log_text
    assert "omniformer results" in log_text and "val_loss" in log_text.split("omniformer results")[1]


def test_a_run_prints_no_notices_a_user_cannot_act_on(tmp_path, caplog, capsys):
    """ "Total FLOPs: 0", three `limit_*_batches=1.0` notices our own config caused, a litlogger tip."""
    with caplog.at_level(logging.INFO):
        run([*LM, "trainer.max_steps=2", "trainer.enable_model_summary=true"], tmp_path / "run")
    out = capsys.readouterr().out + caplog.text
    assert "Total params" in out  # the model summary is still there
    assert "FLOPs" not in out and "was configured so 100%" not in out and "litlogger" not in out
