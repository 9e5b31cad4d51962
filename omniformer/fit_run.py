"""One training run in a prepared run folder: check the config, build callbacks, loggers, data, task
and trainer from it, fit (resuming exactly from a checkpoint when asked), and report the results.

:mod:`omniformer.train` (``omniformer-train``, :func:`omniformer.train.run`) composes the config and holds
the run folder; this module does the rest.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from omniformer.callbacks import NonFiniteLossError, RunInfo, StepSeed, Throughput
from omniformer.checkpoint_io import AtomicCheckpointIO
from omniformer.config import check_train_config
from omniformer.files import atomic_write_text
from omniformer.launch import is_rank_zero
from omniformer.loggers import build_loggers, log_config
from omniformer.model_summary import ModelSummary
from omniformer.results import final_results, last_checkpoint_note, write_results
from omniformer.resume import RestoreLoaderState
from omniformer.run_resume import (
    check_resume_data,
    check_resume_task,
    keep_log_history,
    read_resume,
    resolve_ckpt_path,
)
from omniformer.signals import GracefulStop

log = logging.getLogger("omniformer")


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """Instantiate the configured callbacks (a mapping of name → callback config; null entries skipped)."""
    return [instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node is not None]


def monitored_metric(cfg: DictConfig) -> str:
    """The metric the checkpoint callback watches (``val_acc`` for classifiers, ``val_loss`` for language
    models and when none is configured): what ``best.ckpt`` keeps and a sweeper optimises."""
    return OmegaConf.select(cfg, "callbacks.checkpoint.monitor", default=None) or "val_loss"


def epochs_for_min_steps(trainer_cfg: dict[str, Any], datamodule: L.LightningDataModule) -> None:
    """Size an epoch-limited run to its data: ``trainer.max_epochs: null`` with ``min_epochs`` and/or
    ``min_steps`` becomes the fewest whole epochs that reach both (in place, logged).

    A fixed epoch count gives a small dataset a handful of optimizer steps (1,200 images in batches of
    64 for 5 epochs: 95 steps, shorter than the warmup); the classification tasks ask for at least
    ``min_steps`` steps instead, which leaves large datasets at ``min_epochs``. An explicit
    ``trainer.max_epochs`` is kept as given (Lightning's own ``min_*`` then only hold off early stopping);
    an explicit ``trainer.max_steps`` alone decides the length (``max_epochs`` becomes -1).
    """
    if trainer_cfg.get("max_epochs") is not None or not (
        trainer_cfg.get("min_epochs") or trainer_cfg.get("min_steps")
    ):
        return
    if (trainer_cfg.get("max_steps") or -1) > 0:  # a step budget: the epochs follow from it
        trainer_cfg["max_epochs"] = -1
        log.info(
            "trainer.max_epochs=null with trainer.max_steps=%d: the steps decide", trainer_cfg["max_steps"]
        )
        return
    devices, nodes = trainer_cfg.get("devices", 1), trainer_cfg.get("num_nodes", 1) or 1
    processes = (devices if isinstance(devices, int) and devices > 0 else 1) * nodes
    batches = len(datamodule.train_dataloader())
    per_epoch = max(1, math.ceil(batches / processes / (trainer_cfg.get("accumulate_grad_batches") or 1)))
    min_epochs = trainer_cfg.get("min_epochs") or 1
    epochs = max(min_epochs, math.ceil((trainer_cfg.get("min_steps") or 0) / per_epoch))
    trainer_cfg["max_epochs"] = epochs
    log.info(
        "trainer.max_epochs=null: %d epochs of %d optimizer steps (%d steps; trainer.min_epochs=%s, "
        "trainer.min_steps=%s)",
        epochs,
        per_epoch,
        epochs * per_epoch,
        trainer_cfg.get("min_epochs"),
        trainer_cfg.get("min_steps"),
    )


def fit_run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Check ``cfg``, build callbacks, loggers, data, task and trainer, fit (resuming from
    ``cfg.ckpt_path`` if set) and return the final results, also written to ``results.json``.
    :func:`omniformer.train.train` holds the run folder around it."""
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
    epochs_for_min_steps(trainer_cfg, datamodule)
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
    hparams_metrics = list(dict.fromkeys([monitored_metric(cfg), "val_loss"]))  # TensorBoard HParams columns
    log_config(trainer.loggers, config, hparams_metrics)  # after the kept history: it starts the writers
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
