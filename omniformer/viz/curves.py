"""Line plots and heatmaps of training runs and benchmarks, written as PNG files.

* :func:`plot_run_curves` — loss / accuracy / perplexity / learning-rate / gradient-norm curves from a
  run's ``logs/metrics.csv`` (what ``omniformer-plot`` draws);
* :func:`plot_overlay` — the same curves of several runs (a sweep) on common axes, one line per run;
* :func:`plot_residual_heatmap` — how much each block changes the residual stream over training
  (the :class:`~omniformer.diagnostics.ResidualDiagnostics` history);
* :func:`plot_scaling` — benchmark step time and throughput over batch size and sequence length.

Figures are built with matplotlib's object API (no ``pyplot`` global state, no display needed) and
written atomically: a crash never leaves a half-written PNG.
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

Series = Mapping[str, tuple[Sequence[float], Sequence[float]]]

# Which metrics.csv columns go on which figure: (file stem, title, y label, log scale, predicate).
CURVE_GROUPS = (
    ("loss", "Loss", "loss", False, lambda c: "loss" in c),
    ("accuracy", "Accuracy / F1", "score", False, lambda c: "acc" in c or c.endswith("f1") or "_f1" in c),
    ("perplexity", "Perplexity", "perplexity", True, lambda c: "ppl" in c),
    ("learning_rate", "Learning rate", "learning rate", False, lambda c: c == "lr" or c.startswith("lr-")),
    ("grad_norm", "Gradient norm (before clipping)", "‖g‖₂", True, lambda c: "grad_norm" in c),
)


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def line_plot(
    series: Series,
    path: str | Path,
    title: str,
    xlabel: str = "step",
    ylabel: str = "",
    logy: bool = False,
    logx: bool = False,
) -> Path:
    """One axes with a line (and markers when sparse) per ``label → (xs, ys)``."""
    fig = Figure(figsize=(7, 4.2))
    ax = fig.add_subplot()
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, label=label, marker="o" if len(xs) <= 30 else None, markersize=3, linewidth=1.4)
    if logy and all(y > 0 for _, ys in series.values() for y in ys):
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log", base=2)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def read_metrics_csv(path: str | Path) -> dict[str, tuple[list[float], list[float]]]:
    """Columns of a Lightning ``CSVLogger`` file as ``name → (steps, values)``, empty cells skipped."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{path} holds no logged rows yet (the run logs every trainer.log_every_n_steps)")
    if "step" not in rows[0]:
        raise ValueError(f"{path} has no 'step' column; is it a Lightning CSVLogger metrics file?")
    columns: dict[str, tuple[list[float], list[float]]] = {}
    for row in rows:
        try:
            step = float(row["step"])
        except (TypeError, ValueError):
            continue
        for name, cell in row.items():
            if name in ("step", "epoch") or cell in (None, ""):
                continue
            try:
                value = float(cell)
            except ValueError:
                continue
            if math.isfinite(value):
                xs, ys = columns.setdefault(name, ([], []))
                xs.append(step)
                ys.append(value)
    return columns


def plot_run_curves(metrics_csv: str | Path, out_dir: str | Path) -> list[Path]:
    """One PNG per group of :data:`CURVE_GROUPS` that has logged values; returns the files written."""
    columns = read_metrics_csv(metrics_csv)
    written = []
    for stem, title, ylabel, logy, wanted in CURVE_GROUPS:
        series = {name: data for name, data in sorted(columns.items()) if wanted(name)}
        if series:
            written.append(line_plot(series, Path(out_dir) / f"{stem}.png", title, "step", ylabel, logy))
    return written


def plot_overlay(metrics: Mapping[str, str | Path], out_dir: str | Path) -> list[Path]:
    """Several runs on common axes: one PNG per metric of :data:`CURVE_GROUPS` (``val_loss.png``,
    ``lr-AdamW_decay.png``...), one line per run; ``metrics`` maps a run's label to its ``metrics.csv``."""
    columns = {label: read_metrics_csv(path) for label, path in metrics.items()}
    names = sorted({name for logged in columns.values() for name in logged})
    written, drawn = [], set()
    for _, title, ylabel, logy, wanted in CURVE_GROUPS:
        for name in [n for n in names if wanted(n) and n not in drawn]:
            drawn.add(name)
            series = {label: logged[name] for label, logged in columns.items() if name in logged}
            path = Path(out_dir) / f"{name.replace('/', '_')}.png"  # mnist/val_acc, lr-AdamW/decay
            written.append(line_plot(series, path, f"{title}: {name}", "step", ylabel, logy))
    return written


def plot_residual_heatmap(
    steps: Sequence[int], ratios: Sequence[Sequence[float]], path: str | Path, title: str | None = None
) -> Path:
    """Heatmap of ``ratios[block][probe]`` (‖block output − input‖ / ‖input‖), block × training step."""
    if not steps or not ratios:
        raise ValueError("the residual history is empty: no probe was recorded")
    fig = Figure(figsize=(max(6.0, min(14.0, 0.25 * len(steps) + 4)), 1.0 + 0.45 * len(ratios) + 1.2))
    ax = fig.add_subplot()
    image = ax.imshow(ratios, aspect="auto", origin="lower", cmap="magma", interpolation="nearest")
    ax.set_yticks(range(len(ratios)), [f"block {i}" for i in range(len(ratios))])
    ticks = sorted({int(t) for t in np.linspace(0, len(steps) - 1, min(len(steps), 8)).round()})
    ax.set_xticks(ticks, [str(int(steps[t])) for t in ticks])
    ax.set(xlabel="training step", title=title or "Residual contribution ‖block(x) − x‖ / ‖x‖")
    fig.colorbar(image, ax=ax, label="relative change of the residual stream")
    return save_figure(fig, path)


def plot_scaling(runs: Sequence[Mapping], path: str | Path, title: str = "Scaling") -> Path:
    """Step time and tokens/s over batch size, one line per sequence length (benchmark scaling runs)."""
    if not runs:
        raise ValueError("no scaling runs to plot")
    by_seq: dict[int, list[Mapping]] = {}
    for run in runs:
        by_seq.setdefault(int(run["seq_len"]), []).append(run)
    fig = Figure(figsize=(11, 4.2))
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for seq, points in sorted(by_seq.items()):
        points = sorted(points, key=lambda r: r["batch_size"])
        batches = [p["batch_size"] for p in points]
        left.plot(batches, [p["ms_per_step"] for p in points], marker="o", label=f"seq {seq}")
        right.plot(batches, [p["tokens_per_sec"] for p in points], marker="o", label=f"seq {seq}")
    for ax, ylabel in ((left, "ms per training step"), (right, "tokens / s")):
        ax.set_xscale("log", base=2)
        ax.set(xlabel="batch size (sequences)", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    left.set_yscale("log")
    right.set_ylim(bottom=0)
    fig.suptitle(title)
    return save_figure(fig, path)
