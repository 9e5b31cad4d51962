"""The run's loggers (``logger=csv|tensorboard|none``) and what they are told about the run.

Every logger receives the composed, resolved config as its hyperparameters, flattened to dotted keys
(``optim.lr``, ``model.backbone.depth``...): ``logs/hparams.yaml`` for the CSV logger, the HParams tab
for TensorBoard, so runs can be compared by their settings.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from omniformer.config import ConfigError


def tensorboard_installed() -> bool:
    """Whether Lightning's TensorBoardLogger can write (it takes ``tensorboard`` or ``tensorboardX``)."""
    return any(importlib.util.find_spec(name) is not None for name in ("tensorboard", "tensorboardX"))


def build_loggers(cfg: DictConfig) -> list:
    """Instantiate the configured loggers (a list).

    Raises:
        ConfigError: a TensorBoard logger without the package, naming the extra that installs it.
    """
    nodes = list(cfg.get("logger") or [])
    for node in nodes:
        target = str(node.get("_target_", ""))
        if target.rsplit(".", 1)[-1] == "TensorBoardLogger" and not tensorboard_installed():
            raise ConfigError(
                [
                    f"logger: {target} needs the tensorboard package, which is not installed: "
                    "pip install 'omniformer[tensorboard]' (or use logger=csv)"
                ]
            )
    return [instantiate(node) for node in nodes]


def flatten_config(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A resolved config as ``{"optim.lr": 0.001, ...}``; lists stay values, empty maps stay ``{}``."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    if not tree and prefix:
        return {prefix: {}}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten_config(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def log_config(loggers: list, config: dict[str, Any]) -> None:
    """Give every logger the flattened config as its hyperparameters (Lightning logs a module's
    ``hparams``, which omniformer's tasks and data modules do not keep: ``hparams.yaml`` was ``{}``)."""
    if loggers:
        flat = flatten_config(config)
        for logger in loggers:
            logger.log_hyperparams(flat)
