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
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from omniformer.config import register_schemas
from omniformer.fit_run import build_callbacks, fit_run, monitored_metric  # noqa: F401  (build_callbacks: benchmarks, tests)
from omniformer.known_warnings import silence_known_warnings
from omniformer.launch import check_launch, is_rank_zero
from omniformer.loggers import build_loggers  # noqa: F401  (benchmarks build the same loggers)
from omniformer.results import print_summary
from omniformer.run_folders import check_new_run, register_resolvers
from omniformer.run_lock import hold_run_folder, prepare_run_folder
from omniformer.run_resume import resolve_ckpt_path, resume_command  # noqa: F401  (tests, scripts)
from omniformer.signals import StopRequested
from omniformer.user_errors import reported_briefly

log = logging.getLogger("omniformer")


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
        return fit_run(cfg, run_dir)


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
    return results.get(monitored_metric(cfg))


if __name__ == "__main__":
    main()
