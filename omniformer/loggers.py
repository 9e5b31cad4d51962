"""The run's loggers (``logger=csv|tensorboard|none``) and what they are told about the run.

Every logger receives the composed, resolved config as its hyperparameters, flattened to dotted keys
(``optim.lr``, ``model.backbone.depth``...): ``logs/hparams.yaml`` for the CSV logger, the HParams tab
for TensorBoard, so runs can be compared by their settings.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
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


def log_config(loggers: list, config: dict[str, Any], metrics: Sequence[str] = ()) -> None:
    """Give every logger the flattened config as its hyperparameters (Lightning logs a module's
    ``hparams``, which omniformer's tasks and data modules do not keep: ``hparams.yaml`` was ``{}``).

    A TensorBoard logger also gets the HParams tab's session, whose columns are ``metrics`` (the run's
    own logged scalars, e.g. ``val_loss``, ``val_acc``), in place of Lightning's placeholder
    ``hp_metric`` (-1 for every run unless ``default_hp_metric`` is left on)."""
    if loggers:
        flat = flatten_config(config)
        for logger in loggers:
            logger.log_hyperparams(flat)
            if metrics and is_tensorboard(logger) and not getattr(logger, "_default_hp_metric", True):
                tensorboard_hparams_session(logger, flat, metrics)


def is_tensorboard(logger: Any) -> bool:
    """Lightning's TensorBoardLogger (the class imports without the package; only building one needs it)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    return isinstance(logger, TensorBoardLogger)


@rank_zero_only
def tensorboard_hparams_session(logger: Any, flat: dict[str, Any], metrics: Sequence[str]) -> None:
    """Write the HParams plugin's experiment and session summaries, as Lightning's ``log_hyperparams``
    does, with ``metrics`` as the columns and no value logged for them (the run logs its own)."""
    try:
        from torch.utils.tensorboard.summary import hparams
    except ImportError:  # tensorboardX instead of tensorboard
        from tensorboardX.summary import hparams
    params = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in flat.items()}
    writer = logger.experiment._get_file_writer()
    for summary in hparams(params, dict.fromkeys(metrics, 0.0)):
        writer.add_summary(summary)
