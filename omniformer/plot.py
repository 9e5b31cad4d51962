"""omniformer-plot: training curves of a run as PNG files.

    omniformer-plot outputs/2026-11-29/12-00-00            # → outputs/.../plots/*.png
    omniformer-plot outputs/<run> --out /tmp/figures

Reads the run's ``logs/metrics.csv`` (Lightning's ``CSVLogger``, omniformer-train's default logger)
and draws one figure per group of metrics that was logged: loss (train and validation),
accuracy / F1, perplexity, learning rate, gradient norm. When the run used
``callbacks=diagnostics``, the residual-contribution heatmap is redrawn from
``diagnostics/residual.json`` too.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from omniformer.viz.curves import plot_residual_heatmap, plot_run_curves


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``omniformer-plot``; prints the files written."""
    parser = argparse.ArgumentParser(
        prog="omniformer-plot", description="Draw a run's training curves (loss, accuracy, lr) as PNG files."
    )
    parser.add_argument("run_dir", help="a run folder written by omniformer-train (holds logs/metrics.csv)")
    parser.add_argument("--out", default=None, help="where the PNG files go (default: <run_dir>/plots)")
    args = parser.parse_args(argv)
    try:
        written = plot_run(args.run_dir, args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"omniformer-plot: error: {err}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
