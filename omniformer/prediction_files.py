"""omniformer-predict's rows as a file: JSON Lines, JSON or CSV, one row per input.

A classifier's row holds the input, its most likely label and that label's probability, then the
``top_k`` labels with their probabilities, most likely first; a prefix LM's row holds the input and
its text::

    {"input": "cat.png", "label": "cat", "prob": 0.91, "top": [{"label": "cat", "prob": 0.91}, ...]}
    {"input": "a.wav", "text": "three nine two"}

CSV has no nesting, so the top-k list is flattened into ``label_1, prob_1, ..., label_k, prob_k``
columns (``input, label, prob`` first); a prefix LM's CSV has ``input, text``. Files are written
atomically (:func:`omniformer.files.atomic_write_text`), UTF-8.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omniformer.files import atomic_write_text

#: File formats by name, and the suffix each is recognised by.
FORMATS = {"jsonl": ".jsonl", "json": ".json", "csv": ".csv"}


def output_format(path: str | Path, format: str | None = None) -> str:
    """The format to write ``path`` in: ``format`` when given, else the one its suffix names; checks
    that the folder exists, so that a typo fails before the model is loaded.

    Raises:
        ValueError: an unknown ``format``, or an unknown suffix without ``format`` (naming the path).
        FileNotFoundError: the folder of ``path`` does not exist (naming the path).
    """
    path = Path(path).expanduser()
    known = ", ".join(f"{name} ({suffix})" for name, suffix in FORMATS.items())
    if format is not None and format not in FORMATS:
        raise ValueError(f"format={format!r}: write one of {known}")
    if format is None:
        by_suffix = {suffix: name for name, suffix in FORMATS.items()}
        format = by_suffix.get(path.suffix.lower())
        if format is None:
            raise ValueError(
                f"output={path}: cannot tell the format from the suffix {path.suffix or '(none)'!r}; "
                f"name the file *.jsonl, *.json or *.csv, or give format= ({known})"
            )
    folder = path.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"output={path}: the folder {folder} does not exist; create it first")
    if path.is_dir():
        raise ValueError(
            f"output={path} is a folder; give a file name, e.g. {path / ('predictions' + FORMATS[format])}"
        )
    return format


def flat_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """One predict row as the file holds it: the top label and probability lifted to the front."""
    if "text" in row:
        return {"input": row["input"], "text": row["text"]}
    top = list(row["top"])
    return {"input": row["input"], "label": top[0]["label"], "prob": top[0]["prob"], "top": top}


def write_predictions(rows: Sequence[Mapping[str, Any]], path: str | Path, format: str | None = None) -> Path:
    """Write predict rows (:func:`omniformer.predict.predict`) to ``path``; returns the path.

    Raises:
        ValueError / FileNotFoundError: as :func:`output_format`.
        WriteError: the file could not be written.
    """
    format = output_format(path, format)
    path = Path(path).expanduser()
    flat = [flat_row(row) for row in rows]
    if format == "jsonl":
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in flat)
    elif format == "json":
        text = json.dumps(flat, ensure_ascii=False, indent=2) + "\n"
    else:
        text = _csv_text(flat)
    atomic_write_text(path, text)
    return path


def _csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    if rows and "text" in rows[0]:
        header = ["input", "text"]
        table = [[row["input"], row["text"]] for row in rows]
    else:
        k = max((len(row["top"]) for row in rows), default=0)
        header = ["input", "label", "prob"]
        header += [f"{name}_{i}" for i in range(1, k + 1) for name in ("label", "prob")]
        table = []
        for row in rows:
            ranked = [value for entry in row["top"] for value in (entry["label"], entry["prob"])]
            table.append([row["input"], row["label"], row["prob"], *ranked])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(table)
    return out.getvalue()
