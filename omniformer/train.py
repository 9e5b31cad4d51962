"""omniformer-train: compose a config, build data, model, task and trainer, fit, report.

    omniformer-train                                   # BPE LM on the bundled Tiny Shakespeare
    omniformer-train model=small trainer.max_steps=5000 data.block_size=256
    omniformer-train --multirun model.depth=2,4 optim.lr=1e-3,3e-4
    python -m omniformer.train --cfg job               # print the composed config

Everything lands in the Hydra run directory: checkpoints/, logs/, the data artifacts (vocabulary)
and results.json with the final metrics.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from omniformer.callbacks import RunInfo, Throughput
from omniformer.config import check_train_config, register_schemas
from omniformer.files import atomic_write_text, write_json

log = logging.getLogger("omniformer")
register_schemas()


def resolve_ckpt_path(ckpt_path: str | None, run_dir: Path) -> str | None:
    """``last`` → ``<run_dir>/checkpoints/last.ckpt``; a path must exist."""
    if ckpt_path in (None, ""):
        return None
    path = run_dir / "checkpoints" / "last.ckpt" if ckpt_path == "last" else Path(ckpt_path).expanduser()
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


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Fit the configured task; return the metrics written to ``results.json``."""
    check_train_config(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), run_dir)

    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    with open_dict(cfg):
        cfg.data_spec = datamodule.spec()
    task = instantiate(cfg.task)
    if cfg.get("compile"):
        task.net.backbone.compile()  # in place: state-dict keys stay free of `_orig_mod.`
    artifacts = datamodule.artifacts() if hasattr(datamodule, "artifacts") else {}
    for name, text in artifacts.items():
        atomic_write_text(run_dir / name, text)

    throughput = Throughput()
    config = OmegaConf.to_container(cfg, resolve=True)
    callbacks = [*build_callbacks(cfg), RunInfo(config, artifacts), throughput]
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=build_loggers(cfg) or False, default_root_dir=str(run_dir)
    )
    start = time.perf_counter()
    trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path)
    wall = time.perf_counter() - start
    if trainer.interrupted:
        raise SystemExit(1)

    # The final metrics come from a validation of the final weights.
    final = trainer.validate(task, datamodule=datamodule, verbose=False)[0]
    results: dict[str, Any] = {k: round(float(v), 6) for k, v in final.items()}
    if "val_loss" in results and "val_ppl" not in results:
        results["val_ppl"] = round(math.exp(results["val_loss"]), 4)
    if cfg.get("test_after_fit") and _has_test_split(datamodule):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        tested = trainer.test(task, datamodule=datamodule, ckpt_path=best or None, verbose=False)[0]
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
    sample = getattr(task, "sample_text", None)
    if sample is not None:
        results["sample"] = sample
        atomic_write_text(run_dir / "sample.txt", sample)
    write_json(run_dir / "results.json", results)
    return results


def _has_test_split(datamodule) -> bool:
    return type(datamodule).test_dataloader is not L.LightningDataModule.test_dataloader


def _is_token_task(task) -> bool:
    return hasattr(task, "sample_text")


def print_summary(results: dict[str, Any]) -> None:
    """One table of the final metrics."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="omniformer results", show_header=False)
    for key, value in results.items():
        if key != "sample":
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    Console().print(table)


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Train a model as configured; returns the monitored validation metric (for sweepers)."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    results = train(cfg, run_dir)
    print_summary(results)
    log.info("results written to %s", run_dir / "results.json")
    return results.get("val_loss")


if __name__ == "__main__":
    main()
