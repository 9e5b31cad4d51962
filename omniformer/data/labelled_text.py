"""Reading labelled documents: a folder per class of ``.txt`` files, or a CSV / JSONL of text + label.

Every reader returns ``(text, label name)`` pairs in a deterministic order and raises one error
naming the file (and line, and key) at fault.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from omniformer.data.records import csv_records, jsonl_records


def decode(raw: bytes, path: Path) -> str:
    """``raw`` as UTF-8 text; an error naming ``path`` and the byte offset if it is not."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path} is not valid UTF-8: byte offset {err.start} ({raw[err.start : err.start + 1]!r})"
        ) from None


def read_folder(path: Path) -> list[tuple[str, str]]:
    """``(text, class name)`` for every ``<path>/<class>/*.txt`` file (classes and files sorted)."""
    classes = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise FileNotFoundError(
            f"data.path: {path} has no class sub-folders (one folder of .txt files per class)"
        )
    items = []
    for folder in classes:
        files = sorted(f for f in folder.rglob("*.txt") if f.is_file())
        if not files:
            raise FileNotFoundError(f"class folder {folder} holds no .txt files")
        items += [(decode(f.read_bytes(), f), folder.name) for f in files]
    return items


def read_table(
    path: Path, kind: Literal["csv", "jsonl"], text_key: str, label_key: str
) -> list[tuple[str, str]]:
    """``(text, label)`` rows of a CSV (with a header) or JSONL file; one error naming file, line and key.

    Records and line numbers as :mod:`omniformer.data.records` reads them.
    """
    text = decode(path.read_bytes(), path)
    read = _read_csv if kind == "csv" else _read_jsonl
    items = read(path, text, text_key, label_key)
    if not items:
        raise ValueError(f"{path} holds no rows")
    return items


def _read_csv(path: Path, text: str, text_key: str, label_key: str) -> list[tuple[str, str]]:
    columns: list[str] | None = None
    items: list[tuple[str, str]] = []
    for start, record in csv_records(path, text):
        if columns is None:
            columns = _check_columns(record, path, text_key, label_key)
            continue
        row = dict(zip(columns, record))  # like DictReader: a short row lacks its last keys
        items.append(_row(row.get(text_key), row.get(label_key), path, start, text_key, label_key))
    if columns is None:  # no header either
        _check_columns([], path, text_key, label_key)
    return items


def _check_columns(columns: list[str], path: Path, text_key: str, label_key: str) -> list[str]:
    for key, name in ((text_key, "data.text_key"), (label_key, "data.label_key")):
        if key not in columns:
            raise ValueError(f"{name}={key!r}: {path} has no such column (columns: {columns})")
    return columns


def _read_jsonl(path: Path, text: str, text_key: str, label_key: str) -> list[tuple[str, str]]:
    items = []
    for line, row in jsonl_records(path, text):
        for key, name in ((text_key, "data.text_key"), (label_key, "data.label_key")):
            if key not in row:
                raise ValueError(f"{name}={key!r}: {path}:{line} has no such key (keys: {sorted(row)})")
        items.append(_row(row[text_key], row[label_key], path, line, text_key, label_key))
    return items


def _row(text, label, path: Path, line: int, text_key: str, label_key: str) -> tuple[str, str]:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{path}:{line}: empty or non-text {text_key!r}")
    if label is None or isinstance(label, (list, dict)) or str(label).strip() == "":
        raise ValueError(f"{path}:{line}: missing or non-scalar {label_key!r} ({label!r})")
    return text, str(label).strip()


def sort_classes(labels: Sequence[str]) -> list[str]:
    """Distinct labels in a stable order: numerically when every label is an integer, else by name."""
    distinct = set(labels)
    if all(label.lstrip("-").isdigit() for label in distinct):
        return sorted(distinct, key=int)
    return sorted(distinct)
