"""Structured-config schemas: typed, closed key sets for the config groups.

Hydra merges each YAML file onto its schema, so ``model.dim=abc`` or ``optim.lr=fast`` fails while
the config is composed — before any data is read — with a message naming the key and the value, and
an unknown key (``model.widht=3``) is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class ModelSchema:
    """The shared backbone's shape (``model`` group)."""

    dim: int = MISSING
    depth: int = MISSING
    heads: int = MISSING
    max_seq_len: int = 1024
    mlp_ratio: float = 4.0
    mlp: str = "gelu"
    norm: str = "layernorm"
    dropout: float = 0.0
    bias: bool = True
    rope: bool = True
    init: str = "scaled"
    backbone: Any = MISSING


@dataclass
class OptimSchema:
    """AdamW and schedule settings (``optim`` group); instantiated as :class:`OptimSettings`."""

    _target_: str = "omniformer.tasks.OptimSettings"
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    eps: float = 1e-8
    warmup_steps: int = 100
    min_lr: float = 1e-4
    schedule: str = "cosine"
    fused: bool | None = None


@dataclass
class TrainerSchema:
    """The ``lightning.Trainer`` arguments omniformer configures (``trainer`` group).

    Other Trainer arguments can be added on the command line with ``+trainer.KEY=VALUE``.
    """

    _target_: str = "lightning.Trainer"
    accelerator: str = "auto"
    devices: Any = 1
    num_nodes: int = 1
    strategy: Any = "auto"
    precision: Any = "32-true"
    max_steps: int = -1
    max_epochs: int | None = None
    val_check_interval: Any = 1.0
    check_val_every_n_epoch: int | None = 1
    limit_train_batches: Any = 1.0
    limit_val_batches: Any = 1.0
    limit_test_batches: Any = 1.0
    gradient_clip_val: float | None = None
    accumulate_grad_batches: int = 1
    log_every_n_steps: int = 50
    deterministic: Any = False
    benchmark: bool | None = None
    enable_model_summary: bool = True
    enable_progress_bar: bool = True
    num_sanity_val_steps: int = 2
    fast_dev_run: Any = False
    overfit_batches: Any = 0.0
    profiler: Any = None


def register_schemas(store: ConfigStore | None = None) -> None:
    """Register the schemas under ``<group>/_schema`` so group files can list them in ``defaults``."""
    store = store or ConfigStore.instance()
    store.store(group="model", name="_schema", node=ModelSchema)
    store.store(group="optim", name="_schema", node=OptimSchema)
    store.store(group="trainer", name="_schema", node=TrainerSchema)


def check_train_config(cfg) -> None:
    """Cross-key checks that no single schema can express; raise before any data is read."""
    model, data = cfg.get("model"), cfg.get("data")
    if model is not None and model.get("dim") is not None and model.dim % model.heads:
        raise ValueError(f"model.heads={model.heads} must divide model.dim={model.dim}")
    block = data.get("block_size") if data is not None else None
    if block is not None and model is not None and block > model.max_seq_len:
        raise ValueError(
            f"data.block_size={block} exceeds model.max_seq_len={model.max_seq_len}; "
            "lower data.block_size or raise model.max_seq_len"
        )
