"""Manifests of (media, text) pairs: JSONL or CSV rows ``{"audio": "a.wav", "text": "..."}`` or
``{"image": "b.png", "text": "..."}``, media paths relative to the manifest's folder.

Every row is checked while reading, and a bad one fails with one error naming the manifest and its
line: no media column, both media columns, a column nobody reads, empty text, a media file that does
not exist. Line numbers are physical lines of the file where the record starts (a CSV record with a
quoted newline spans several lines); ``\\r\\n`` line ends and quoted commas read as CSV says.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from omniformer.data.records import csv_records, jsonl_records

#: Columns that name a media file, by the modality they hold.
MEDIA_COLUMNS = ("audio", "image")
TEXT_COLUMN = "text"


@dataclass(frozen=True)
class ManifestRow:
    """One checked row: the media file (absolute), its modality, the text, and where the row is."""

    modality: str
    path: Path
    text: str
    where: str  # "<manifest>:<line>", for errors about this row later (an unreadable file)


def manifest_format(path: Path) -> str:
    """``csv`` or ``jsonl`` from the file name; one error for any other suffix."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    raise ValueError(f"{path}: a manifest must be a .jsonl or .csv file (rows of a media path and its text)")


def read_manifest(path: str | Path, media_columns: Sequence[str] = MEDIA_COLUMNS) -> list[ManifestRow]:
    """Every row of the manifest at ``path``, checked (see the module docstring); ``media_columns`` are
    the columns that may name a media file (a plug-in modality's reader names its own)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist")
    kind = manifest_format(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text ({err})") from None
    records = _csv_records(path, text) if kind == "csv" else jsonl_records(path, text)
    rows = [check_row(record, path, line, media_columns) for line, record in records]
    if not rows:
        raise ValueError(f"manifest {path} holds no rows")
    return rows


def check_row(
    record: Mapping[str, object], manifest: Path, line: int, media_columns: Sequence[str] = MEDIA_COLUMNS
) -> ManifestRow:
    """One record as a :class:`ManifestRow`; one error naming ``manifest:line`` if it is bad."""
    where = f"{manifest}:{line}"
    columns = sorted(record)
    media = [c for c in media_columns if c in record]
    unknown = [c for c in columns if c not in (*media_columns, TEXT_COLUMN)]
    names = " or ".join(repr(c) for c in media_columns)
    if unknown or len(media) > 1:
        raise ValueError(f"{where}: unknown column mix {columns}; a row holds 'text' and one of {names}")
    if not media:
        raise ValueError(f"{where}: no media column (columns: {columns}); add {names}")
    text = record.get(TEXT_COLUMN)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}: empty or missing 'text' ({text!r})")
    name = record[media[0]]
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{where}: empty or non-text {media[0]!r} path ({name!r})")
    file = (manifest.parent / name.strip()).resolve()
    if not file.is_file():
        raise FileNotFoundError(f"{where}: {media[0]} file {file} does not exist")
    return ManifestRow(media[0], file, text, where)


def _csv_records(path: Path, text: str) -> Iterator[tuple[int, dict[str, str]]]:
    columns: list[str] | None = None
    for start, record in csv_records(path, text):
        if columns is None:
            columns = [c.strip() for c in record]
            continue
        if len(record) != len(columns):
            raise ValueError(f"{path}:{start}: {len(record)} fields for the {len(columns)} columns {columns}")
        yield start, {c: v for c, v in zip(columns, record) if v != "" or c == TEXT_COLUMN}
