"""omniformer-train: compose a config, build data, model, task and trainer, fit, report.

    omniformer-train                                   # BPE LM on the bundled Tiny Shakespeare
    omniformer-train model=small trainer.max_steps=5000 data.block_size=256
    omniformer-train --multirun model.depth=2,4 optim.lr=1e-3,3e-4
    omniformer-train hydra.run.dir=outputs/run1 ckpt_path=last   # continue an interrupted run
    omniformer-train trainer=ddp_cpu                   # 2 processes on one CPU machine (gloo)
    python -m omniformer.train --cfg job               # print the composed config

Everything lands in the Hydra run directory: checkpoints/ (``last.ckpt`` every
``callbacks.checkpoint.every_n_train_steps`` steps, after validations and at the end; ``best.ckpt``),
logs/, the data artifacts (vocabulary) and results.json with the final metrics.

A run stopped by SIGTERM or Ctrl-C saves ``last.ckpt`` after the current step and prints the command
that resumes it; a resumed run repeats the uninterrupted run's losses (see ``omniformer.resume``).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import shlex
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from omniformer.callbacks import NonFiniteGuard, NonFiniteLossError, RunInfo, StepSeed, Throughput
from omniformer.checkpoint import SECTION, safe_torch_load
from omniformer.checkpoint_io import AtomicCheckpointIO, RunCheckpoint
from omniformer.config import check_train_config, register_schemas
from omniformer.files import WriteError, atomic_write_text, write_json
from omniformer.resume import RestoreLoaderState
from omniformer.run_lock import RunFolderError, hold_run_folder, prepare_run_folder
from omniformer.signals import GracefulStop, StopRequested

log = logging.getLogger("omniformer")
register_schemas()


def silence_known_warnings() -> None:
    """Hide warnings that a run prints every time and a user cannot act on; each one by message and
    module, nothing broader."""
    # Lightning 2.6 builds torch's deprecated LeafSpec whenever it flattens logged values.
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"lightning\.pytorch\.utilities\._pytree",
    )


silence_known_warnings()

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


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """Instantiate the configured callbacks (a mapping of name → callback config; null entries skipped)."""
    return [instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node is not None]


def build_loggers(cfg: DictConfig) -> list:
    """Instantiate the configured loggers (a list)."""
    return [instantiate(node) for node in (cfg.get("logger") or [])]


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


def _is_rank_zero() -> bool:
    return (rank_zero_only.rank or 0) == 0


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Fit the configured task; return the metrics written to ``results.json``.

    Raises:
        RunFolderError: ``run_dir`` cannot be written, or another run holds it (before anything else).
        ConfigError: the config is invalid (before any data is read).
        StopRequested: SIGTERM / SIGINT stopped training after saving ``last.ckpt``.
        NonFiniteLossError: a non-finite loss stopped training (``callbacks.nonfinite.action=stop``).
        WriteError: a checkpoint or result could not be written (full disk...).
    """
    with hold_run_folder(run_dir):  # one run per folder, for the whole run (omniformer.run_lock)
        return _train(cfg, run_dir)


def _train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    check_train_config(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), run_dir)
    resume = read_resume(ckpt_path) if ckpt_path else None
    if resume is not None:
        _check_resume_task(resume, cfg)
    configured = build_callbacks(cfg)  # before the data: a bad callback argument fails first
    for callback in configured:
        if isinstance(callback, RunCheckpoint):
            callback.resuming = resume is not None
    loggers = build_loggers(cfg)

    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    with open_dict(cfg):
        cfg.data_spec = datamodule.spec()
    task = instantiate(cfg.task)
    if cfg.get("compile"):
        task.net.backbone.compile()  # in place: state-dict keys stay free of `_orig_mod.`
    artifacts = datamodule.artifacts() if hasattr(datamodule, "artifacts") else {}
    config = OmegaConf.to_container(cfg, resolve=True)
    if resume is not None:
        _check_resume(resume, artifacts, config)
    if _is_rank_zero():
        for name, text in artifacts.items():
            atomic_write_text(run_dir / name, text)

    throughput = Throughput()
    stop = GracefulStop(default_path=run_dir / "checkpoints" / "last.ckpt")
    callbacks = [
        *configured,
        RunInfo(config, artifacts),
        throughput,
        StepSeed(cfg.seed),
        RestoreLoaderState(),
        stop,
    ]
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    plugins = trainer_cfg.pop("plugins", None) or []
    trainer: L.Trainer = instantiate(
        trainer_cfg,
        callbacks=callbacks,
        logger=loggers or False,
        default_root_dir=str(run_dir),
        plugins=[AtomicCheckpointIO(), *(plugins if isinstance(plugins, list) else [plugins])],
    )
    if resume is not None and trainer.is_global_zero:
        keep_log_history(trainer.loggers, resume.global_step)
    start = time.perf_counter()
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except NonFiniteLossError as err:
        raise NonFiniteLossError(f"{err}. {_last_checkpoint_note(trainer)}") from None
    wall = time.perf_counter() - start
    if trainer.interrupted:
        raise SystemExit(1)

    # The final metrics come from a validation of the final weights.
    final = trainer.validate(task, datamodule=datamodule, verbose=False)[0]
    results: dict[str, Any] = {k: round(float(v), 6) for k, v in final.items()}
    if "val_loss" in results and "val_ppl" not in results and _is_token_task(task):
        results["val_ppl"] = round(math.exp(results["val_loss"]), 4)
    if cfg.get("test_after_fit") and _has_test_split(datamodule):
        best = getattr(trainer.checkpoint_callback, "best_model_path", "") or ""
        tested = trainer.test(
            task, datamodule=datamodule, ckpt_path=best or None, verbose=False, weights_only=True
        )[0]
        results.update({k: round(float(v), 6) for k, v in tested.items()})
    speed = throughput.summary()
    results.update(
        steps=int(trainer.global_step),
        wall_seconds=round(wall, 2),
        ms_per_step=speed["ms_per_step"],
        data_wait_fraction=speed["data_wait_fraction"],
        parameters=sum(p.numel() for p in task.parameters()),
        run_dir=str(run_dir),
    )
    results["tokens_per_sec" if _is_token_task(task) else "samples_per_sec"] = speed["items_per_sec"]
    for callback in trainer.callbacks:
        if isinstance(callback, NonFiniteGuard) and callback.action == "skip":
            results["nonfinite_skipped_steps"] = callback.skipped
    if resume is not None:
        results.update(resumed_from=resume.path, resumed_at_step=resume.global_step)
    sample = getattr(task, "sample_text", None)
    if sample is not None:
        results["sample"] = sample
        if trainer.is_global_zero:
            atomic_write_text(run_dir / "sample.txt", sample)
    if trainer.is_global_zero:
        write_json(run_dir / "results.json", results)
    return results


def _check_resume(resume: Resume, artifacts: dict[str, str], config: dict[str, Any]) -> None:
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


def _check_resume_task(resume: Resume, cfg: DictConfig) -> None:
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


def _last_checkpoint_note(trainer: L.Trainer) -> str:
    path = getattr(trainer.checkpoint_callback, "last_model_path", "") or ""
    if path and Path(path).is_file():
        return f"The last good checkpoint is {path}"
    return "No checkpoint had been written yet"


def _has_test_split(datamodule) -> bool:
    return type(datamodule).test_dataloader is not L.LightningDataModule.test_dataloader


def _is_token_task(task) -> bool:
    return hasattr(task, "sample_text")


def resume_command(run_dir: Path, overrides: list[str]) -> str:
    """The command line that continues this run: its overrides, its run dir, ``ckpt_path=last``."""
    kept = [o for o in overrides if not o.lstrip("+~").startswith(("ckpt_path=", "hydra.run.dir="))]
    args = [*kept, f"hydra.run.dir={run_dir}", "ckpt_path=last"]
    return "omniformer-train " + " ".join(shlex.quote(a) for a in args)


def check_launch(run_dir: Path, run_dir_given: bool) -> None:
    """Every process of a multi-process launch (torchrun, srun) must write to one run folder.

    Hydra's default run folder is a timestamp, which differs between processes started a second
    apart; Lightning's own launcher passes its folder on, external launchers cannot.
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    slurm = int(os.environ.get("SLURM_NTASKS", "1") or 1) if "SLURM_PROCID" in os.environ else 1
    if max(world, slurm) > 1 and not run_dir_given:
        raise ValueError(
            f"this is one of {max(world, slurm)} processes of a multi-process launch, but hydra.run.dir is "
            f"not set (this process would write to {run_dir}); add hydra.run.dir=<a folder every process "
            "sees> to the command"
        )


def print_summary(results: dict[str, Any]) -> None:
    """One table of the final metrics."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="omniformer results", show_header=False)
    for key, value in results.items():
        if key != "sample":
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)


def run(overrides: list[str] | None = None, run_dir: str | Path | None = None) -> dict[str, Any]:
    """Train from Python exactly as ``omniformer-train <overrides>`` would; return the results.

    Args:
        overrides: command-line style overrides, e.g. ``["model=small", "trainer.max_steps=100"]``.
        run_dir: the run folder (default: ``outputs/<date>/<time>`` as on the command line).
    """
    from hydra import compose, initialize_config_module

    register_schemas()
    overrides = list(overrides or [])
    if run_dir is not None:
        overrides.append(f"hydra.run.dir={run_dir}")
    with initialize_config_module("omniformer.conf", version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    out = Path(run_dir) if run_dir is not None else Path(cfg.hydra.run.dir)
    prepare_run_folder(out)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out.resolve())
    HydraConfig.instance().set_config(cfg)  # `${hydra:runtime.output_dir}` in callbacks and loggers
    with open_dict(cfg):
        del cfg["hydra"]
    return train(cfg, out.resolve())


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Train a model as configured; returns the monitored validation metric (for sweepers)."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    # A multirun job's folder (the sweep's, e.g. from the submitit launcher) is fixed before it starts.
    fixed = hydra_cfg.mode == RunMode.MULTIRUN or any(
        o.startswith("hydra.run.dir=") for o in hydra_cfg.overrides.hydra
    )
    check_launch(run_dir, fixed)
    try:
        results = train(cfg, run_dir)
    except (RunFolderError, WriteError) as err:  # the message says it all; Lightning's frames would bury it
        raise CompactHydraException(str(err)) from None
    except StopRequested as stop:
        if _is_rank_zero():
            where = f"Checkpoint: {stop.checkpoint}" if stop.checkpoint else "No checkpoint was written."
            print(
                f"\nTraining stopped by {stop.signal_name} after step {stop.step}. {where}\n"
                f"Resume with:\n  {resume_command(run_dir, list(HydraConfig.get().overrides.task))}",
                file=sys.stderr,
                flush=True,
            )
        sys.exit(stop.exit_code)
    if _is_rank_zero():
        print_summary(results)
        log.info("results written to %s", run_dir / "results.json")
    return results.get("val_loss")


if __name__ == "__main__":
    main()
