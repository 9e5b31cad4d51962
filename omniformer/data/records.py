"""Physical-line records of CSV and JSONL files, shared by every reader of tables and manifests.

A record ends only at a newline (CSV: ``\\n``, ``\\r\\n`` or ``\\r`` outside quotes; JSONL: ``\\n`` or
``\\r\\n``): U+2028, U+0085, form feeds and the other breaks ``str.splitlines`` knows are ordinary
characters of a field. Each record comes with the physical line of the file where it starts (a CSV
record with a quoted newline spans several lines), so errors can name it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path


def csv_records(path: Path, text: str) -> Iterator[tuple[int, list[str]]]:
    """``(line, fields)`` of every non-blank CSV record of ``text`` (the header included); an invalid
    record is one error naming ``path:line``."""
    # StringIO(newline="") splits lines as a file opened with newline="" does, as the csv module wants.
    reader = csv.reader(io.StringIO(text, newline=""))
    while True:
        start = reader.line_num + 1  # line_num: physical lines read so far
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise ValueError(f"{path}:{start}: not valid CSV ({err})") from None
        if record:  # a blank line is skipped, as csv.DictReader skips it
            yield start, record


def jsonl_records(path: Path, text: str) -> Iterator[tuple[int, dict]]:
    """``(line, object)`` of every non-blank JSONL line of ``text``; a line that is not a JSON object is
    one error naming ``path:line``."""
    for line, raw in enumerate(text.split("\n"), start=1):
        raw = raw.removesuffix("\r")
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{line} is not valid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{line} is not a JSON object")
        yield line, record
