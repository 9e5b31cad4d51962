"""A language-modelling corpus on disk: read it, normalise it, and split it into training and validation.

The corpus is one UTF-8 file or a folder of ``.txt`` files (sorted, joined by newlines). Text is
normalised before anything else sees it: a UTF-8 byte-order mark at the start of a file is dropped and
Windows line ends (CRLF) become ``\\n``, so a corpus saved on Windows trains on the same characters as
its Unix copy (both counted in the log).

How validation text is held out (``data.split``):

* ``tail``: the last ``val_fraction`` of the characters of the whole corpus, as nanoGPT splits
  (the default for one file; for a folder it is the end of the last file in sort order);
* ``per_file``: the last ``val_fraction`` of each file (the default for a folder), so every book,
  and not only the last one, is seen in both splits;
* ``files``: whole files held out: those named by ``data.val_files``, or else ``max(1,
  round(n · val_fraction))`` of them chosen by the hash of their names (stable when a file is added,
  independent of the run's seed).

A split is a list of :class:`Piece` s (a character range of one file) joined by newlines; the pieces
also let an error name the file and line of a character.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from omniformer.data.locations import missing_hint

SplitKind = Literal["auto", "tail", "per_file", "files"]
SPLITS = ("auto", "tail", "per_file", "files")
BOM = "\ufeff"


def read_text(path: str | Path) -> str:
    """Read a UTF-8 file, or every ``.txt`` file of a folder (sorted, joined by newlines).

    Raises one error naming the file (and byte offset) at fault: missing, empty or not UTF-8.
    """
    return "\n".join(text for _, text in read_text_files(path))


def read_text_files(path: str | Path) -> list[tuple[Path, str]]:
    """``(file, text)`` of a UTF-8 file, or of every ``.txt`` file of a folder (sorted); errors as
    :func:`read_text`'s."""
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise FileNotFoundError(f"text folder {path} contains no .txt files")
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"text file or folder {path} does not exist; {missing_hint(path)}")
    parts = []
    for file in files:
        raw = file.read_bytes()
        try:
            parts.append((file, raw.decode("utf-8")))
        except UnicodeDecodeError as err:
            raise ValueError(
                f"{file} is not valid UTF-8: byte offset {err.start} ({raw[err.start : err.start + 1]!r})"
            ) from None
    if not any(text.strip() for _, text in parts):
        raise ValueError(f"text source {path} is empty")
    return parts


@dataclass(frozen=True)
class Normalised:
    """What :func:`normalise` changed: files that began with a BOM, CRLF line ends and their files."""

    boms: int = 0
    crlf: int = 0
    crlf_files: int = 0

    def describe(self) -> str | None:
        """One log line, or ``None`` when nothing changed."""
        if not (self.boms or self.crlf):
            return None
        done = []
        if self.boms:
            done.append(f"stripped the UTF-8 byte-order mark of {self.boms} file(s)")
        if self.crlf:
            done.append(f"turned {self.crlf:,} CRLF line ends into LF in {self.crlf_files} file(s)")
        return "text corpus: " + " and ".join(done)


def normalise(parts: Sequence[tuple[Path, str]]) -> tuple[list[tuple[Path, str]], Normalised]:
    """``parts`` without a leading byte-order mark and with CRLF line ends as ``\\n``; what changed."""
    out, boms, crlf, crlf_files = [], 0, 0, 0
    for file, text in parts:
        if text.startswith(BOM):
            text, boms = text[1:], boms + 1
        count = text.count("\r\n")
        if count:
            text, crlf, crlf_files = text.replace("\r\n", "\n"), crlf + count, crlf_files + 1
        out.append((file, text))
    return out, Normalised(boms, crlf, crlf_files)


@dataclass(frozen=True)
class Piece:
    """Characters ``start:end`` of ``file``, whose whole (normalised) text is ``text``."""

    file: Path
    text: str
    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start

    @property
    def chars(self) -> str:
        return self.text[self.start : self.end]


def joined(pieces: Sequence[Piece]) -> str:
    """The text of a split: its pieces joined by newlines (as the files of a folder are)."""
    return "\n".join(piece.chars for piece in pieces)


def locate(pieces: Sequence[Piece], position: int) -> tuple[Path, int]:
    """The file and 1-based line of character ``position`` of :func:`joined` ``(pieces)``."""
    for piece in pieces:
        if position <= len(piece):  # == len(piece): the joining newline, counted as the piece's end
            return piece.file, piece.text.count("\n", 0, piece.start + position) + 1
        position -= len(piece) + 1
    raise IndexError(f"position {position} lies beyond the corpus")


def check_split(split: str, val_files: Sequence[str] | None) -> None:
    """One error for an unknown ``data.split``, or ``data.val_files`` without ``data.split=files``."""
    if split not in SPLITS:
        raise ValueError(f"data.split={split!r}; choose {', '.join(SPLITS[:-1])} or {SPLITS[-1]}")
    if val_files and split != "files":
        raise ValueError(f"data.val_files={list(val_files)} holds out whole files: set data.split=files too")


def resolve_split(split: str, path: Path) -> str:
    """``auto`` is ``per_file`` for a folder and ``tail`` for one file (``split`` checked by
    :func:`check_split`)."""
    if split == "auto":
        return "per_file" if path.is_dir() else "tail"
    return split


def split_corpus(
    parts: Sequence[tuple[Path, str]],
    how: str,
    val_fraction: float,
    val_files: Sequence[str] | None = None,
    root: Path | None = None,
) -> dict[str, list[Piece]]:
    """``{"train": [...], "val": [...]}`` pieces of the corpus ``parts`` split ``how`` (module docstring);
    ``val_files`` are named relative to ``root``, the corpus folder (needed by ``files`` alone).

    Raises:
        ValueError: ``files`` with one file, a ``val_files`` name that is no file of the corpus, or
            every file held out.
    """
    whole = [Piece(file, text, 0, len(text)) for file, text in parts]
    if how == "tail":
        position = int((sum(len(p) for p in whole) + len(whole) - 1) * (1 - val_fraction))
        for index, piece in enumerate(whole):
            if position <= len(piece):
                head = Piece(piece.file, piece.text, 0, position)
                tail = Piece(piece.file, piece.text, position, len(piece))
                return {"train": [*whole[:index], head], "val": [tail, *whole[index + 1 :]]}
            position -= len(piece) + 1
    if how == "per_file":
        cuts = [int(len(p) * (1 - val_fraction)) for p in whole]
        return {
            "train": [Piece(p.file, p.text, 0, cut) for p, cut in zip(whole, cuts)],
            "val": [Piece(p.file, p.text, cut, len(p)) for p, cut in zip(whole, cuts)],
        }
    if how != "files" or root is None:
        raise ValueError(f"split_corpus: how={how!r} (tail, per_file or files, the last with root)")
    held = held_out_files([p.file for p in whole], val_fraction, val_files, root)
    return {
        "train": [p for p in whole if p.file not in held],
        "val": [p for p in whole if p.file in held],
    }


def held_out_files(
    files: Sequence[Path], val_fraction: float, names: Sequence[str] | None, root: Path
) -> set[Path]:
    """The files ``data.split=files`` holds out: ``names`` (file names or paths relative to the
    corpus folder ``root``), or the ``max(1, round(n · val_fraction))`` files with the smallest hash
    of their name."""
    if len(files) < 2:
        raise ValueError(
            f"data.split=files holds out whole files, but the corpus is one file ({files[0]}); use "
            "data.split=tail, or a folder of several .txt files"
        )
    relative = {f: f.relative_to(root).as_posix() for f in files}
    if names:
        held = {f for f in files if relative[f] in names or f.name in names}
        known = set(relative.values()) | {f.name for f in files}
        unknown = [n for n in names if n not in known]
        if unknown:
            shown = ", ".join(sorted(relative.values())[:8])
            raise ValueError(
                f"data.val_files names {unknown}, which are not .txt files of {root} (files: {shown}"
                f"{', ...' if len(files) > 8 else ''})"
            )
    else:
        count = max(1, round(len(files) * val_fraction))
        digest = {f: hashlib.sha256(relative[f].encode("utf-8")).hexdigest() for f in files}
        held = set(sorted(files, key=digest.__getitem__)[:count])
    if len(held) >= len(files):
        raise ValueError(f"data.val_files holds out every file of {root}; leave at least one to train on")
    return held
