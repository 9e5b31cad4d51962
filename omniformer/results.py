"""What a finished run reports: the final metrics, speed, size and sample, as ``results.json``."""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch

from omniformer.callbacks import NonFiniteGuard, Throughput
from omniformer.data.splits import has_split
from omniformer.early_stopping import EarlyStop
from omniformer.files import atomic_write_text, write_json
from omniformer.run_checkpoint import RunCheckpoint


def final_results(
    trainer: L.Trainer,
    task: L.LightningModule,
    datamodule: L.LightningDataModule,
    run_dir: Path,
    throughput: Throughput,
    wall: float,
    test: bool,
) -> dict[str, Any]:
    """Validate the final weights (kept as ``best.ckpt`` when the fit judged no best), test the best ones
    (when ``test`` and the data has a test split); add speed, size and the text sample; write
    ``sample.txt`` on rank zero.

    ``results["weights"]`` says which weights each metric was measured on: ``last weights (step N)``
    for the validation, ``best.ckpt (step M)`` for the test.
    """
    validated = trainer.validate(task, datamodule=datamodule, verbose=False)
    final = validated[0] if validated else {}  # nothing when trainer.limit_val_batches=0
    if isinstance(trainer.checkpoint_callback, RunCheckpoint):  # a run too short to validate keeps one
        trainer.checkpoint_callback.keep_final_validation(trainer)
    steps = int(trainer.global_step)
    results: dict[str, Any] = {k: round(float(v), 6) for k, v in final.items()}
    tokens = hasattr(task, "sample_text")  # a token task reports tokens/s and perplexity
    if "val_loss" in results and "val_ppl" not in results and tokens:
        results["val_ppl"] = round(math.exp(results["val_loss"]), 4)
    weights = dict.fromkeys(results, weights_label(steps))
    if test and has_split(datamodule, "test"):
        best = getattr(trainer.checkpoint_callback, "best_model_path", "") or ""
        tested = trainer.test(
            task, datamodule=datamodule, ckpt_path=best or None, verbose=False, weights_only=True
        )[0]
        label = f"{Path(best).name} (step {checkpoint_step(best)})" if best else weights_label(steps)
        for key, value in tested.items():
            results[key], weights[key] = round(float(value), 6), label
    speed = throughput.summary()
    results.update(
        steps=steps,
        wall_seconds=round(wall, 2),
        ms_per_step=speed["ms_per_step"],
        data_wait_fraction=speed["data_wait_fraction"],
        parameters=sum(p.numel() for p in task.parameters()),
        run_dir=str(run_dir),
    )
    results["tokens_per_sec" if tokens else "samples_per_sec"] = speed["items_per_sec"]
    for callback in trainer.callbacks:
        if isinstance(callback, NonFiniteGuard) and callback.action == "skip":
            results["nonfinite_skipped_steps"] = callback.skipped
        if isinstance(callback, EarlyStop):  # early_stopped, early_stopped_at_step (when it is on)
            results.update(callback.results())
    results["weights"] = weights
    sample = getattr(task, "sample_text", None)
    if sample is not None:
        results["sample"] = sample
        if trainer.is_global_zero:
            atomic_write_text(run_dir / "sample.txt", sample)
    return results


def weights_label(steps: int) -> str:
    """How the results name the weights training ended with."""
    return f"last weights (step {steps})"


def checkpoint_step(path: str | Path) -> int | str:
    """The optimizer step a checkpoint was saved at (its metadata only: the tensors are memory-mapped),
    ``?`` if it cannot be read."""
    try:
        return int(torch.load(path, map_location="cpu", mmap=True, weights_only=True)["global_step"])
    except Exception:  # a label, not a check: the test itself has just read the file
        return "?"


def last_checkpoint_note(trainer: L.Trainer) -> str:
    """Where the last good checkpoint is, in a sentence (for errors that stop training)."""
    path = getattr(trainer.checkpoint_callback, "last_model_path", "") or ""
    if path and Path(path).is_file():
        return f"The last good checkpoint is {path}"
    return "No checkpoint had been written yet"


def write_results(trainer: L.Trainer, run_dir: Path, results: dict[str, Any]) -> None:
    """``results.json`` in the run folder (rank zero only)."""
    if trainer.is_global_zero:
        write_json(run_dir / "results.json", results)


def print_summary(results: dict[str, Any]) -> None:
    """One table of the final metrics, each with the weights it was measured on, on stdout and, as
    plain text, in the log files (``train.log``)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="omniformer results")
    for column in ("", "value", "measured on"):
        table.add_column(column)
    weights = results.get("weights") or {}
    for key, value in shown_metrics(results).items():
        if key not in ("sample", "weights"):
            table.add_row(key, format_value(key, value), weights.get(key, ""))
    Console().print(table)
    text = io.StringIO()
    Console(file=text, width=110, no_color=True).print(table)
    _to_log_files(f"results:\n{text.getvalue().rstrip()}")


def shown_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics`` as tables and logs show them: a value logged twice, under its plain name and as
    ``<name>_weighted_sum`` (a multi-task model's ``val_loss``, which checkpoints monitor), once, under
    the name that says what it is."""
    return {k: v for k, v in metrics.items() if f"{k}_weighted_sum" not in metrics}


def format_value(key: str, value: Any) -> str:
    """A result as the table shows it: counts with thousands separators, fractions as percentages,
    seconds to a tenth, other numbers with four decimals below 10 and fewer above (``1.7691``,
    ``65.43``, ``1,234``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if key.endswith("_fraction"):
        return f"{100 * value:.1f}%"
    if key.endswith("_seconds"):
        return f"{value:,.1f}"
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:.{1 if size >= 100 else 2}f}"
    return f"{value:.4f}" if size >= 1e-3 or value == 0 else f"{value:.3g}"


def _to_log_files(message: str) -> None:
    """``message`` as an ``omniformer`` INFO record, to the root logger's file handlers only (stdout
    already shows it)."""
    record = logging.getLogger("omniformer").makeRecord(
        "omniformer", logging.INFO, __file__, 0, message, (), None
    )
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
