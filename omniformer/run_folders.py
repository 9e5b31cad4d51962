"""Fresh runs go to fresh folders: a folder that holds an earlier run is continued or left alone.

A second run started into a folder that already holds a run's checkpoints, logs or results would mix
the old model's checkpoints with the new run's logs. :func:`check_new_run` refuses it unless the
command continues that run (``ckpt_path=last``, a checkpoint path, or ``ckpt_path=auto``, which
requeued cluster jobs use on every launch). The experiment presets therefore give each run its own
timestamped folder under ``outputs/experiments/<preset>/``, and a preset that starts from another
preset's model finds that preset's newest run with the ``${latest_run:<folder>}`` resolver
(:func:`latest_run`).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from omniformer.run_lock import RunFolderError

#: What a training run leaves in its folder (Hydra's ``.hydra/`` and ``train.log``, written before
#: the run starts, and the data artifacts are not evidence of one).
RUN_FILES = ("checkpoints", "logs", "tensorboard", "results.json")


class RunFolderUsed(RunFolderError):
    """The run folder holds an earlier run and this run does not continue it."""


def earlier_run_files(folder: Path) -> list[str]:
    """The entries of :data:`RUN_FILES` that ``folder`` holds (empty folders do not count)."""
    found = []
    for name in RUN_FILES:
        path = folder / name
        if path.is_file() or (path.is_dir() and any(path.iterdir())):
            found.append(name + ("/" if path.is_dir() else ""))
    return found


def check_new_run(folder: str | Path, ckpt_path: str | None) -> None:
    """Refuse to start a new run (no ``ckpt_path``) in ``folder`` when it holds an earlier run.

    Raises:
        RunFolderUsed: naming the folder, what it holds and the two ways on.
    """
    if ckpt_path not in (None, ""):
        return  # continues a run (last, auto, a path): the folder is meant to hold one
    folder = Path(folder)
    found = earlier_run_files(folder) if folder.is_dir() else []
    if not found:
        return
    start = (
        "start a new run in a fresh folder: leave hydra.run.dir unset (a new timestamped folder each run) "
        "or give another hydra.run.dir"
    )
    if (folder / "checkpoints" / "last.ckpt").is_file():
        ways = f"Continue that run with ckpt_path=last, or {start}"
    else:
        ways = start[0].upper() + start[1:]
    raise RunFolderUsed(
        f"run folder {folder} already holds a run ({', '.join(found)}); a new run there would mix its "
        f"files with the old ones. {ways}"
    )


def latest_run(folder: str) -> str:
    """``${latest_run:outputs/experiments/multitask_text_lm}``: the run under ``folder`` (a timestamped
    sub-folder, or ``folder`` itself as presets wrote before) whose ``checkpoints/last.ckpt`` is newest.

    Raises:
        ValueError: no run under ``folder`` has written ``checkpoints/last.ckpt`` yet.
    """
    root = Path(folder).expanduser()
    candidates = [root, *(sorted(root.iterdir()) if root.is_dir() else [])]
    runs = [c for c in candidates if (c / "checkpoints" / "last.ckpt").is_file()]
    if not runs:
        raise ValueError(
            f"no run under {root} has written checkpoints/last.ckpt yet: train that run first, or give "
            "the checkpoint yourself (model.backbone.init_from=<path>)"
        )
    return str(max(runs, key=lambda c: (c / "checkpoints" / "last.ckpt").stat().st_mtime))


def register_resolvers() -> None:
    """Register ``${latest_run:...}`` (idempotent)."""
    if not OmegaConf.has_resolver("latest_run"):
        OmegaConf.register_new_resolver("latest_run", latest_run)
