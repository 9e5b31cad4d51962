"""Resuming a run: which checkpoint, what it was trained as and on, and the log it continues.

``ckpt_path=last|auto|<path>`` names the checkpoint (:func:`resolve_ckpt_path`); its metadata is
read cheaply (:func:`read_resume`) and checked before any data is read (:func:`check_resume_task`: the
same task and modality) and once the data is built (:func:`check_resume_data`: the same vocabulary and
classes; changed settings are listed in a warning). :func:`keep_log_history` keeps the CSV rows up to
the checkpoint's step, and :func:`resume_command` is the line a stopped run prints.
"""

from __future__ import annotations

import csv
import logging
import shlex
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf

from omniformer.checkpoint import SECTION, safe_torch_load

log = logging.getLogger("omniformer")

#: Config keys that may differ between a run and its resumption without changing what is learned.
HARMLESS_ON_RESUME = (
    "ckpt_path",
    "compile",
    "test_after_fit",
    "data.num_workers",
    "data.cache_dir",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "callbacks.progress",
    "callbacks.checkpoint.every_n_train_steps",
    "logger",
)


def resolve_ckpt_path(ckpt_path: str | None, run_dir: Path) -> str | None:
    """``last`` → ``<run_dir>/checkpoints/last.ckpt`` (must exist); ``auto`` → that file if it exists,
    else a fresh start (for jobs that are requeued with the same command); a path must exist."""
    if ckpt_path in (None, ""):
        return None
    last = run_dir / "checkpoints" / "last.ckpt"
    if ckpt_path == "auto":
        return str(last) if last.is_file() else None
    path = last if ckpt_path == "last" else Path(ckpt_path).expanduser()
    if not path.is_file():
        hint = (
            " (resume needs hydra.run.dir=<the run's folder> ckpt_path=last)" if ckpt_path == "last" else ""
        )
        raise FileNotFoundError(f"ckpt_path: checkpoint {path} does not exist{hint}")
    return str(path)


@dataclass
class Resume:
    """What a run resumes from: the checkpoint, its step, config and data artifacts."""

    path: str
    global_step: int
    config: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)


def read_resume(path: str) -> Resume:
    """Read a checkpoint's metadata (weights-only and memory-mapped: cheap even for large files)."""
    checkpoint = safe_torch_load(path, mmap=True)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"ckpt_path: {path} is not a Lightning training checkpoint")
    section = checkpoint.get(SECTION) or {}
    return Resume(
        path,
        int(checkpoint.get("global_step", 0)),
        dict(section.get("config") or {}),
        dict(section.get("artifacts") or {}),
    )


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: tree}


def config_differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``key: old → new`` for every resolved config value that changed (harmless keys excluded)."""
    old, new = _flatten(before), _flatten(now)
    lines = []
    for key in sorted(set(old) | set(new)):
        if any(key == h or key.startswith(h + ".") for h in HARMLESS_ON_RESUME):
            continue
        if old.get(key, "<absent>") != new.get(key, "<absent>"):
            lines.append(f"{key}: {old.get(key, '<absent>')!r} → {new.get(key, '<absent>')!r}")
    return lines


def keep_log_history(loggers: list, step: int) -> None:
    """Keep the CSV rows of a resumed run up to its checkpoint's step.

    Lightning's CSV logger deletes an existing ``metrics.csv`` when it starts; a resumed run would
    lose the curve up to the checkpoint, and a crashed run's rows after it would be recomputed.
    """
    for logger in loggers:
        if not isinstance(logger, CSVLogger):
            continue
        path = Path(logger.log_dir) / "metrics.csv"
        if not path.is_file():
            continue
        with open(path, newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.DictReader(handle) if (row.get("step") or "").isdigit()]
        kept = [row for row in rows if int(row["step"]) < step]
        with warnings.catch_warnings():  # "previous log files ... will be deleted": they are kept here
            warnings.filterwarnings("ignore", message="Experiment logs directory")
            logger.experiment  # noqa: B018 - starting the writer deletes the old file
        for row in kept:
            values = {k: float(v) for k, v in row.items() if k != "step" and v not in ("", None)}
            logger.log_metrics(values, step=int(row["step"]))
        logger.save()


def check_resume_data(resume: Resume, artifacts: dict[str, str], config: dict[str, Any]) -> None:
    """Refuse data whose encoding differs from the checkpoint's; warn about changed settings."""
    changed = sorted(
        name for name in set(resume.artifacts) & set(artifacts) if resume.artifacts[name] != artifacts[name]
    )
    if changed:
        raise ValueError(
            f"ckpt_path: {resume.path} was trained with a different {', '.join(changed)} than this data "
            "produces; the model's inputs or labels would mean something else. Resume with the same data "
            "and data.* settings"
        )
    if resume.config:
        differences = config_differences(resume.config, config)
        if differences:
            shown = "\n  ".join(differences[:12]) + ("\n  ..." if len(differences) > 12 else "")
            log.warning(
                "resuming %s with settings that differ from the checkpoint's (the run will not repeat the "
                "uninterrupted one):\n  %s",
                resume.path,
                shown,
            )


def _trained_as(config: dict[str, Any]) -> tuple[str, str]:
    """``(task class, modality)`` of a config, and how to say it: ``ClassificationTask on image data
    (omniformer.data.MNISTDataModule)``."""
    task, data = config.get("task") or {}, config.get("data") or {}
    name, modality = str(task.get("_target_", "?")).rsplit(".", 1)[-1], task.get("modality")
    on = f" on {modality} data" if isinstance(modality, str) else ""
    return f"{name}/{modality}", f"{name}{on} ({data.get('_target_', '?')})"


def check_resume_task(resume: Resume, cfg: DictConfig) -> None:
    """Refuse a checkpoint of another task or modality before any data is read (Lightning would read
    the data, then list every missing and unexpected weight)."""
    if not resume.config:
        return
    keys = {"task": ("_target_", "modality"), "data": ("_target_",)}
    config = {group: {k: OmegaConf.select(cfg, f"{group}.{k}") for k in keys[group]} for group in keys}
    (before, trained), (now, this) = _trained_as(resume.config), _trained_as(config)
    if before != now:
        raise ValueError(
            f"ckpt_path: {resume.path} was trained as {trained}; this run is {this}. Resume it with the "
            "task and data it was trained with, or start from it with model.backbone.init_from=<checkpoint> "
            "(the backbone only)"
        )


def resume_command(run_dir: Path, overrides: list[str]) -> str:
    """The command line that continues this run: its overrides, its run dir, ``ckpt_path=last``."""
    kept = [o for o in overrides if not o.lstrip("+~").startswith(("ckpt_path=", "hydra.run.dir="))]
    args = [*kept, f"hydra.run.dir={run_dir}", "ckpt_path=last"]
    return "omniformer-train " + " ".join(shlex.quote(a) for a in args)
