"""omniformer-plot: curves from a run's metrics.csv (and the residual heatmap) as valid PNG files."""

from __future__ import annotations

import csv
import json
import struct

import pytest

from omniformer.plot import main, plot_run, plot_runs
from omniformer.sweep import run_labels
from omniformer.viz.curves import plot_scaling, read_metrics_csv
from tests.helpers.runs import run_main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

METRICS = """epoch,grad_norm,lr-AdamW,step,train_loss,val_acc,val_loss,val_ppl
0,,0.0001,0,,,,
0,2.5,,1,4.1,,,
0,,0.0005,4,,,,
0,1.8,,5,3.2,,,
0,,,5,,0.31,3.0,20.1
0,,0.001,9,,,,
0,1.1,,9,2.6,,,
0,,,9,,0.52,2.4,11.0
"""


def check_png(path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 300 and height >= 200, (width, height)
    assert len(data) > 5000


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    (run / "logs" / "metrics.csv").write_text(METRICS)
    return run


def test_metrics_columns_are_read_by_step(run_dir):
    columns = read_metrics_csv(run_dir / "logs" / "metrics.csv")
    assert columns["train_loss"] == ([1.0, 5.0, 9.0], [4.1, 3.2, 2.6])
    assert columns["val_acc"] == ([5.0, 9.0], [0.31, 0.52])
    assert "epoch" not in columns


@pytest.mark.slow
def test_plot_command_writes_one_png_per_metric_group(run_dir, capsys):
    assert main([str(run_dir)]) == 0
    names = sorted(p.name for p in (run_dir / "plots").iterdir())
    assert names == ["accuracy.png", "grad_norm.png", "learning_rate.png", "loss.png", "perplexity.png"]
    for path in (run_dir / "plots").iterdir():
        check_png(path)
    assert "loss.png" in capsys.readouterr().out


@pytest.mark.slow
def test_residual_heatmap_is_redrawn_from_diagnostics(run_dir, tmp_path):
    (run_dir / "diagnostics").mkdir()
    history = {"steps": [0, 50, 100], "blocks": 2, "ratios": [[0.0, 0.2, 0.3], [0.0, 0.05, 0.4]]}
    (run_dir / "diagnostics" / "residual.json").write_text(json.dumps(history))
    written = plot_run(run_dir, tmp_path / "figures")
    heatmap = tmp_path / "figures" / "residual_heatmap.png"
    assert heatmap in written
    check_png(heatmap)


@pytest.mark.slow
def test_scaling_plot(tmp_path):
    runs = [
        {"batch_size": b, "seq_len": s, "ms_per_step": b * s / 10, "tokens_per_sec": 1000.0 * b}
        for b in (4, 8)
        for s in (64, 128)
    ]
    check_png(plot_scaling(runs, tmp_path / "scaling.png"))


def test_clear_errors(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "logger=none" in capsys.readouterr().err
    (tmp_path / "nohead" / "logs").mkdir(parents=True)
    (tmp_path / "nohead" / "logs" / "metrics.csv").write_text("")
    assert main([str(tmp_path / "nohead")]) == 2
    assert "no logged rows" in capsys.readouterr().err


@pytest.mark.slow  # 20 steps with diagnostics (4 s in process); the parts have fast tests
def test_train_with_diagnostics_then_plot(tmp_path):
    """The documented commands: omniformer-train callbacks=diagnostics, then omniformer-plot <run>."""
    run = tmp_path / "run"
    run_main(
        "omniformer.train", "callbacks=diagnostics", "debug=fast", "data.tokenizer=char", "model.dim=32",
        "model.depth=2", "model.heads=2", "data.block_size=32", "data.batch_size=8",
        "callbacks.diagnostics.every_n_steps=5", "callbacks.diagnostics.grad_norm_every_n_steps=5",
        f"hydra.run.dir={run}",
    )  # fmt: skip
    history = json.loads((run / "diagnostics" / "residual.json").read_text())
    assert history["steps"] == [0, 5, 10, 15, 20] and history["blocks"] == 2
    proc = run_main("omniformer.plot", str(run))
    for name in ("loss.png", "learning_rate.png", "grad_norm.png", "residual_heatmap.png"):
        assert name in proc.stdout
        check_png(run / "plots" / name)


# -- several runs overlaid (issue #17) -------------------------------------------------------------------
def sweep_job(folder, overrides: list[str], scale: float = 1.0):
    """A run folder as a multirun job leaves it: its overrides and a metrics.csv (losses times scale)."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if scale:
        (folder / "logs").mkdir()
        rows = METRICS.replace("4.1", str(4.1 * scale)).replace("3.0", str(3.0 * scale))
        (folder / "logs" / "metrics.csv").write_text(rows)
    return folder


@pytest.mark.slow
def test_a_sweep_folder_is_drawn_one_figure_per_metric_one_line_per_run(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for job, lr in enumerate(["0.001", "0.0003"]):
        sweep_job(sweep / str(job), ["model.depth=1", f"optim.lr={lr}"], scale=1 + job)
    sweep_job(sweep / "2", ["model.depth=1", "optim.lr=0.1"], scale=0)  # failed before logging
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    assert main([str(sweep)]) == 0
    out = capsys.readouterr()
    assert "left out" in out.err and str(sweep / "2") in out.err
    names = sorted(p.name for p in (sweep / "plots").iterdir())
    assert names == sorted(
        f"{c}.png" for c in ("grad_norm", "lr-AdamW", "train_loss", "val_acc", "val_loss", "val_ppl")
    )
    for path in (sweep / "plots").iterdir():
        check_png(path)
    assert "val_loss.png" in out.out


@pytest.mark.slow
def test_several_run_folders_are_overlaid_in_their_common_folder(tmp_path):
    a = sweep_job(tmp_path / "runs" / "a", ["optim.lr=0.001"])
    b = sweep_job(tmp_path / "runs" / "b", ["optim.lr=0.01"], scale=2)
    written = plot_runs([a, b])
    assert {p.parent for p in written} == {tmp_path / "runs" / "plots"}
    assert run_labels([a, b]) == {a: "optim.lr=0.001", b: "optim.lr=0.01"}
    assert plot_runs([a, b], tmp_path / "figures")[0].parent == tmp_path / "figures"


def test_overlays_fail_clearly_without_any_logged_run(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    sweep_job(sweep / "0", ["x=1"], scale=0)
    assert main([str(sweep), str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([str(sweep)]) == 2
    assert "holds a run with logged metrics" in capsys.readouterr().err


def test_a_trained_runs_parameter_groups_are_named_in_its_logs_and_overlays(tiny_lm_run, tmp_path):
    """The learning rate of each optimizer parameter group is logged and drawn under the group's name
    (decay: weight matrices and embeddings; no_decay: biases and norm gains), not as pg1, pg2."""
    with (tiny_lm_run / "logs" / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    lrs = sorted(c for c in rows[0] if c.startswith("lr-"))
    assert lrs == ["lr-AdamW/decay", "lr-AdamW/no_decay"]
    runs = []
    for name in ("a", "b"):  # two copies of the run's learning-rate columns (the other figures cost time)
        runs.append(tmp_path / "runs" / name)
        (runs[-1] / "logs").mkdir(parents=True)
        with (runs[-1] / "logs" / "metrics.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, ["step", *lrs], extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    proc = run_main("omniformer.plot", *map(str, runs))
    plots = tmp_path / "runs" / "plots"
    assert sorted(p.name for p in plots.iterdir()) == ["lr-AdamW_decay.png", "lr-AdamW_no_decay.png"]
    for path in plots.iterdir():
        assert path.name in proc.stdout
        check_png(path)
