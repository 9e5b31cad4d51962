"""Where a data module's files are: ``data.root`` (the data folder) and ``data.path`` within it.

Every data config points at its data through ``paths.data_dir`` (conf/paths/default.yaml:
``$OMNIFORMER_DATA``, else ``../shared/data``), so one setting moves every dataset. A relative
``data_dir`` is relative to the folder the command runs in; each data module logs the absolute folder
it reads, and an error for a missing one says how ``data.root`` was found (:func:`missing_hint`).
"""

from __future__ import annotations

from pathlib import Path


def data_location(root: str | Path | None, path: str | Path | None, key: str = "data.path") -> Path | None:
    """The file or folder a data module reads: ``path`` under ``root`` when ``path`` is relative and
    ``root`` is given, ``path`` alone, ``root`` alone, or ``None`` when neither is given."""
    if path is not None and str(path).strip() == "":
        raise ValueError(f"{key} is empty; give a file or folder, or leave it null")
    if path is not None:
        location = Path(path).expanduser()
        if root is not None and not location.is_absolute():
            location = Path(root).expanduser() / location
        return location
    return Path(root).expanduser() if root is not None else None


def missing_hint(where: Path) -> str:
    """What to say after "``where`` does not exist": where the configs' data folder comes from, and
    for a relative ``where`` the working directory it was resolved against."""
    base = "the configs point data.root at paths.data_dir ($OMNIFORMER_DATA, else ../shared/data)"
    if where.is_absolute():
        return base
    return f"{where} is relative to the working directory {Path.cwd()}; {base}, or give an absolute path"
