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

import logging
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from omniformer.callbacks import NonFiniteLossError, RunInfo, StepSeed, Throughput
from omniformer.checkpoint_io import AtomicCheckpointIO
from omniformer.config import check_train_config, register_schemas
from omniformer.files import atomic_write_text
from omniformer.known_warnings import silence_known_warnings
from omniformer.launch import check_launch, is_rank_zero
from omniformer.loggers import build_loggers, log_config
from omniformer.model_summary import ModelSummary
from omniformer.results import final_results, last_checkpoint_note, print_summary, write_results
from omniformer.resume import RestoreLoaderState
from omniformer.run_folders import check_new_run, register_resolvers
from omniformer.run_lock import hold_run_folder, prepare_run_folder
from omniformer.run_resume import (
    check_resume_data,
    check_resume_task,
    keep_log_history,
    read_resume,
    resolve_ckpt_path,
    resume_command,
)
from omniformer.signals import GracefulStop, StopRequested
from omniformer.user_errors import reported_briefly

log = logging.getLogger("omniformer")


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """Instantiate the configured callbacks (a mapping of name → callback config; null entries skipped)."""
    return [instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node is not None]


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Fit the configured task; return the metrics written to ``results.json``.

    Raises:
        RunFolderError: ``run_dir`` cannot be written, another run holds it, or it holds an earlier run
            and ``ckpt_path`` is not set (before anything else).
        ConfigError: the config is invalid (before any data is read).
        StopRequested: SIGTERM / SIGINT stopped training after saving ``last.ckpt``.
        NonFiniteLossError: a non-finite loss stopped training (``callbacks.nonfinite.action=stop``).
        WriteError: a checkpoint or result could not be written (full disk...).
    """
    with hold_run_folder(run_dir) as lock:  # one run per folder, for the whole run (omniformer.run_lock)
        if lock is not None:  # the launch's leader: the ranks it starts write into the folder it checked
            check_new_run(run_dir, cfg.get("ckpt_path"))
        return _train(cfg, run_dir)


def _train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    check_train_config(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), run_dir)
    resume = read_resume(ckpt_path) if ckpt_path else None
    if resume is not None:
        check_resume_task(resume, cfg)
    configured = build_callbacks(cfg)  # before the data: a bad callback argument fails first
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
        check_resume_data(resume, artifacts, config)
    if is_rank_zero():
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
    if trainer_cfg.get("enable_model_summary", True):  # ours, without Lightning's FLOPs (always 0 here)
        callbacks.append(ModelSummary())
    trainer_cfg["enable_model_summary"] = False
    trainer: L.Trainer = instantiate(
        trainer_cfg,
        callbacks=callbacks,
        logger=loggers or False,
        default_root_dir=str(run_dir),
        plugins=[AtomicCheckpointIO(), *(plugins if isinstance(plugins, list) else [plugins])],
    )
    if resume is not None and trainer.is_global_zero:
        keep_log_history(trainer.loggers, resume.global_step)
    log_config(trainer.loggers, config)  # after the kept history: it starts the writers
    start = time.perf_counter()
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except NonFiniteLossError as err:
        raise NonFiniteLossError(f"{err}. {last_checkpoint_note(trainer)}") from None
    wall = time.perf_counter() - start
    if trainer.interrupted:
        raise SystemExit(1)
    # The final metrics come from a validation of the final weights.
    results = final_results(
        trainer, task, datamodule, run_dir, throughput, wall, bool(cfg.get("test_after_fit"))
    )
    if resume is not None:
        results.update(resumed_from=resume.path, resumed_at_step=resume.global_step)
    write_results(trainer, run_dir, results)
    return results


def run(overrides: list[str] | None = None, run_dir: str | Path | None = None) -> dict[str, Any]:
    """Train from Python exactly as ``omniformer-train <overrides>`` would; return the results.

    Args:
        overrides: command-line style overrides, e.g. ``["model=small", "trainer.max_steps=100"]``.
        run_dir: the run folder (default: ``outputs/<date>/<time>`` as on the command line).
    """
    cfg, out = compose_run(overrides, run_dir)
    return train(cfg, out)


def compose_run(
    overrides: list[str] | None = None, run_dir: str | Path | None = None, config_name: str = "train"
) -> tuple[DictConfig, Path]:
    """The config ``omniformer-train <overrides>`` would run (schemas registered, Hydra's runtime set
    for ``${hydra:...}`` interpolations) and its prepared run folder."""
    from hydra import compose, initialize_config_module

    register_schemas()
    register_resolvers()  # ${latest_run:...} in presets
    silence_known_warnings()
    overrides = list(overrides or [])
    if run_dir is not None:
        overrides.append(f"hydra.run.dir={run_dir}")
    with initialize_config_module("omniformer.conf", version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    out = Path(run_dir) if run_dir is not None else Path(cfg.hydra.run.dir)
    prepare_run_folder(out)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out.resolve())
    HydraConfig.instance().set_config(cfg)  # `${hydra:runtime.output_dir}` in callbacks and loggers
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, out.resolve()


def main() -> float | None:
    """omniformer-train: compose the config from the command line, train; returns the monitored
    validation metric (for sweepers)."""
    register_schemas()  # the group files list them in their defaults; Hydra composes after this
    register_resolvers()  # ${latest_run:...} in presets
    return _main()


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def _main(cfg: DictConfig) -> float | None:
    """Train a model as configured (in the process that trains: a launcher's job, too)."""
    silence_known_warnings()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    # A multirun job's folder (the sweep's, e.g. from the submitit launcher) is fixed before it starts.
    fixed = hydra_cfg.mode == RunMode.MULTIRUN or any(
        o.startswith("hydra.run.dir=") for o in hydra_cfg.overrides.hydra
    )
    try:
        with reported_briefly():  # a user error is one message; HYDRA_FULL_ERROR=1 shows the traceback
            check_launch(run_dir, fixed)
            results = train(cfg, run_dir)
    except StopRequested as stop:
        if is_rank_zero():
            where = f"Checkpoint: {stop.checkpoint}" if stop.checkpoint else "No checkpoint was written."
            print(
                f"\nTraining stopped by {stop.signal_name} after step {stop.step}. {where}\n"
                f"Resume with:\n  {resume_command(run_dir, list(HydraConfig.get().overrides.task))}",
                file=sys.stderr,
                flush=True,
            )
        sys.exit(stop.exit_code)
    if is_rank_zero():
        print_summary(results)
        log.info("results written to %s", run_dir / "results.json")
    return monitored_value(cfg, results)


def monitored_value(cfg: DictConfig, results: dict[str, Any]) -> float | None:
    """The final value of the metric the checkpoint callback watches (``val_acc`` for classifiers,
    ``val_loss`` for language models): what a sweeper optimises."""
    monitor = OmegaConf.select(cfg, "callbacks.checkpoint.monitor", default=None) or "val_loss"
    return results.get(monitor)


if __name__ == "__main__":
    main()
