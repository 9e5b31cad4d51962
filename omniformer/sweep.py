"""Runs of a sweep side by side: their folders, what each changed, and a summary table sorted by the
metric the task monitors.

``omniformer-train --multirun`` writes one run folder per job under the sweep folder
(``multirun/<date>/<time>/<job number>/``), each with the overrides it ran with
(``.hydra/overrides.yaml``), its config (``.hydra/config.yaml``) and, once it finished,
``results.json``. At the end of the sweep, :class:`SweepSummary` (a Hydra callback,
``hydra.callbacks.sweep_summary`` in ``conf/train.yaml``) writes ``sweep_summary.md`` and
``sweep_summary.json`` into the sweep folder and prints the table: one row per job, labelled by the
overrides that differ between jobs, best first by the metric the checkpoint monitors (``val_acc``,
highest first, for classifiers; ``val_loss`` or ``val_cer``, lowest first, otherwise), with its
steps and wall time. ``omniformer-plot <sweep folder>`` overlays the jobs' curves with the same labels.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback

from omniformer.files import atomic_write_text, write_json

SUMMARY_NAME = "sweep_summary"


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None


def run_overrides(run_dir: str | Path) -> list[str]:
    """The command-line overrides a run was started with (``.hydra/overrides.yaml``; none if absent)."""
    found = _read_yaml(Path(run_dir) / ".hydra" / "overrides.yaml")
    return [str(o) for o in found] if isinstance(found, list) else []


def monitored_metric(run_dir: str | Path) -> tuple[str, str]:
    """The metric a run's checkpoint watched and which way is better (``.hydra/config.yaml``:
    ``callbacks.checkpoint.monitor`` and ``mode``); ``("val_loss", "min")`` when not recorded."""
    config = _read_yaml(Path(run_dir) / ".hydra" / "config.yaml")
    checkpoint = ((config or {}).get("callbacks") or {}).get("checkpoint") or {}
    monitor, mode = checkpoint.get("monitor"), checkpoint.get("mode")
    plain = isinstance(monitor, str) and "${" not in monitor
    return (monitor if plain else "val_loss"), ("max" if mode == "max" else "min")


def sweep_runs(sweep_dir: str | Path) -> list[Path]:
    """The run folders of a sweep: folders below it holding ``.hydra/overrides.yaml``, in job order."""
    sweep_dir = Path(sweep_dir)
    runs = {p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")} - {sweep_dir}

    def order(path: Path) -> tuple:
        parts = path.relative_to(sweep_dir).parts
        return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)

    return sorted(runs, key=order)


def run_labels(run_dirs: Sequence[str | Path]) -> dict[Path, str]:
    """A short label per run: the overrides not shared by every run (``optim.lr=0.001
    model.depth=2``), else the folder's name."""
    overrides = {Path(r): run_overrides(r) for r in run_dirs}
    shared = set.intersection(*(set(o) for o in overrides.values())) if len(overrides) > 1 else set()
    labels = {}
    for run, given in overrides.items():
        varying = [o for o in given if o not in shared]
        labels[run] = " ".join(varying) if varying and len(overrides) > 1 else run.name
    return labels


def summarize(sweep_dir: str | Path) -> dict[str, Any]:
    """The summary of every run in ``sweep_dir``: one row per job, best first (runs without a value
    of their metric last, in job order)."""
    runs = sweep_runs(sweep_dir)
    labels = run_labels(runs)
    rows = []
    for run in runs:
        monitor, mode = monitored_metric(run)
        try:
            results = json.loads((run / "results.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            results = None
        value = results.get(monitor) if isinstance(results, dict) else None
        status = "ok" if results is not None else "no results.json (failed or still running)"
        if isinstance(results, dict) and results.get("early_stopped"):
            status = f"stopped early at step {results.get('early_stopped_at_step')}"
        rows.append(
            {
                "job": str(run.relative_to(sweep_dir)),
                "label": labels[run],
                "overrides": run_overrides(run),
                "metric": monitor,
                "mode": mode,
                "value": value if isinstance(value, (int, float)) and math.isfinite(value) else None,
                "steps": (results or {}).get("steps"),
                "wall_seconds": (results or {}).get("wall_seconds"),
                "status": status,
                "run_dir": str(run),
            }
        )
    rows.sort(key=lambda r: (r["value"] is None, 0 if r["value"] is None else _signed(r)))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    metrics = sorted({r["metric"] for r in rows})
    return {"sweep_dir": str(sweep_dir), "metric": metrics[0] if len(metrics) == 1 else metrics, "runs": rows}


def _signed(row: dict[str, Any]) -> float:
    return -row["value"] if row["mode"] == "max" else row["value"]


def summary_table(summary: dict[str, Any]) -> str:
    """The summary as a Markdown table."""
    one_metric = isinstance(summary["metric"], str)
    metric = summary["metric"] if one_metric else "metric"
    highest = bool(summary["runs"]) and summary["runs"][0]["mode"] == "max"
    best = " (highest first)" if highest else " (lowest first)"
    head = ["#", "job", "overrides", f"{metric}{best if one_metric else ''}", "steps", "wall (s)", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in summary["runs"]:
        value = "—" if row["value"] is None else f"{row['value']:.4f}"
        if not one_metric:
            value = f"{row['metric']} {value}"
        cells = [
            row["rank"],
            row["job"],
            f"`{row['label']}`",
            value,
            "—" if row["steps"] is None else row["steps"],
            "—" if row["wall_seconds"] is None else f"{row['wall_seconds']:.1f}",
            row["status"],
        ]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write_summary(sweep_dir: str | Path) -> tuple[Path, str]:
    """Write ``sweep_summary.md`` and ``sweep_summary.json`` into ``sweep_dir``; return the Markdown
    file and its table."""
    sweep_dir = Path(sweep_dir)
    summary = summarize(sweep_dir)
    table = summary_table(summary)
    title = f"# Sweep {sweep_dir}\n\n{len(summary['runs'])} runs, best first by the monitored metric.\n\n"
    atomic_write_text(sweep_dir / f"{SUMMARY_NAME}.md", title + table)
    write_json(sweep_dir / f"{SUMMARY_NAME}.json", summary)
    return sweep_dir / f"{SUMMARY_NAME}.md", table


class SweepSummary(Callback):
    """Hydra callback: at the end of a multirun, the summary table of its runs (:func:`write_summary`),
    written into the sweep folder and printed. A failure to summarise is reported, never raised: the
    runs themselves are done."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            path, table = write_summary(sweep_dir)
        except Exception as err:  # the sweep is over; a summary problem must not hide its results
            print(f"omniformer: no sweep summary for {sweep_dir}: {err}", file=sys.stderr, flush=True)
            return
        print(f"\nSweep summary ({path}):\n{table}", flush=True)
