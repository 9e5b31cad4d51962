"""omniformer-plot: training curves of a run as PNG files, or of several runs (a sweep) overlaid.

    omniformer-plot outputs/2026-11-29/12-00-00            # → outputs/.../plots/*.png
    omniformer-plot outputs/<run> --out /tmp/figures
    omniformer-plot multirun/2026-11-29/12-00-00           # a sweep: every job, one line each
    omniformer-plot outputs/<run a> outputs/<run b>        # several runs → <their common folder>/plots

Reads the run's ``logs/metrics.csv`` (Lightning's ``CSVLogger``, omniformer-train's default logger)
and draws one figure per group of metrics that was logged: loss (train and validation),
accuracy / F1, perplexity, learning rate, gradient norm. When the run used
``callbacks=diagnostics``, the residual-contribution heatmap is redrawn from
``diagnostics/residual.json`` too.

Given a sweep folder (``omniformer-train --multirun``; its jobs are the folders below it with
``.hydra/overrides.yaml``) or several run folders, it draws one figure per metric instead
(``val_loss.png``, ``train_loss.png``, ``lr-AdamW_decay.png``...) with one line per run, labelled by the
overrides that differ between the runs (:func:`omniformer.sweep.run_labels`); the figures go to
``<sweep>/plots``, or the folder holding all the runs, unless ``--out`` says otherwise. A run with
no logged metrics yet (a job that failed early) is left out with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from omniformer.sweep import run_labels, sweep_runs
from omniformer.viz.curves import plot_overlay, plot_residual_heatmap, plot_run_curves


def find_metrics(run_dir: Path) -> Path:
    """The ``metrics.csv`` of a run folder (``logs/metrics.csv``, else the newest one below it)."""
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    default = run_dir / "logs" / "metrics.csv"
    if default.is_file():
        return default
    found = sorted(run_dir.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(
            f"{run_dir} holds no logs/metrics.csv; was it trained with logger=none? "
            "(omniformer-train logs to CSV by default)"
        )
    return found[-1]


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Draw every available figure of ``run_dir`` into ``out_dir`` (default ``<run>/plots``)."""
    run_dir = Path(run_dir).expanduser()
    out = Path(out_dir).expanduser() if out_dir else run_dir / "plots"
    written = plot_run_curves(find_metrics(run_dir), out)
    residual = run_dir / "diagnostics" / "residual.json"
    if residual.is_file():
        history = json.loads(residual.read_text(encoding="utf-8"))
        if history.get("steps"):
            written.append(
                plot_residual_heatmap(history["steps"], history["ratios"], out / "residual_heatmap.png")
            )
    if not written:
        raise ValueError(
            f"{run_dir}: metrics.csv has no loss, accuracy, learning-rate or gradient-norm column"
        )
    return written


def is_sweep(folder: Path) -> bool:
    """Whether ``folder`` is a sweep folder (``multirun.yaml``, or run folders below it and no
    ``logs/`` of its own) rather than one run."""
    if (folder / "multirun.yaml").is_file():
        return True
    return not (folder / "logs").is_dir() and bool(sweep_runs(folder))


def plot_runs(
    folders: Sequence[str | Path], out_dir: str | Path | None = None, notes: TextIO | None = None
) -> list[Path]:
    """One run's figures (:func:`plot_run`), or, for a sweep folder or several folders (sweeps are
    expanded into their jobs), the runs overlaid (:func:`omniformer.viz.curves.plot_overlay`) in
    ``out_dir`` (default: ``<sweep>/plots``, or ``plots`` in the folder holding every run)."""
    folders = [Path(f).expanduser() for f in folders]
    if not folders:
        raise ValueError("give a run folder, a sweep folder or several run folders")
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(f"run folder {folder} does not exist")
    if len(folders) == 1 and not is_sweep(folders[0]):
        return plot_run(folders[0], out_dir)
    runs = [run for folder in folders for run in (sweep_runs(folder) if is_sweep(folder) else [folder])]
    metrics = {}
    for run in runs:
        try:
            metrics[run] = find_metrics(run)
        except FileNotFoundError as err:
            print(f"omniformer-plot: left out {run}: {err}", file=notes or sys.stderr)
    if not metrics:
        raise FileNotFoundError(f"none of {', '.join(map(str, folders))} holds a run with logged metrics")
    labels = unique_labels(run_labels(list(metrics)))
    if out_dir is None:
        common = Path(os.path.commonpath([str(f.resolve()) for f in folders]))
        out_dir = (common if common.is_dir() and len(folders) > 1 else folders[0]) / "plots"
    written = plot_overlay({labels[run]: path for run, path in metrics.items()}, Path(out_dir).expanduser())
    if not written:
        raise ValueError(
            "the runs' metrics.csv files have no loss, accuracy, learning-rate or gradient-norm column"
        )
    return written


def unique_labels(labels: dict[Path, str]) -> dict[Path, str]:
    """``labels`` with the folder added to a label two runs share."""
    counts = Counter(labels.values())
    return {run: label if counts[label] == 1 else f"{label} ({run})" for run, label in labels.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``omniformer-plot``; prints the files written."""
    parser = argparse.ArgumentParser(
        prog="omniformer-plot",
        description="Draw a run's training curves (loss, accuracy, lr) as PNG files; given a sweep folder "
        "or several runs, overlay them (one line per run, labelled by its overrides).",
    )
    parser.add_argument(
        "run_dirs",
        nargs="+",
        metavar="run_dir",
        help="a run folder written by omniformer-train (holds logs/metrics.csv), a sweep folder "
        "(--multirun), or several run folders",
    )
    parser.add_argument(
        "--out", default=None, help="where the PNG files go (default: <run_dir>/plots, <sweep>/plots)"
    )
    args = parser.parse_args(argv)
    try:
        written = plot_runs(args.run_dirs, args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"omniformer-plot: error: {err}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
