"""Benchmark workloads: a training configuration of omniformer, named and pluggable from YAML.

A workload is a list of ``omniformer-train`` overrides (``task=...``, ``data=...``, ``model=...``), so
the benchmark builds *exactly* the data module and task that ``omniformer-train`` would build —
the framework path is measured, not a copy of it. A workload may replace the ``data`` node with
any data module (e.g. the synthetic token stream of :mod:`benchmarks.synthetic` for GPU
runs that must not wait for a tokenizer to train). New modalities plug in as new entries under
``workloads:`` in ``benchmarks/conf/bench.yaml``. The hand-written loops compute what the task
computes, ``task.model_step(batch)`` (loss, outputs, targets), so any task that defines it plugs in
as it is.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
import yaml
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict


def compose_train(overrides: Sequence[str]) -> DictConfig:
    """The ``train`` config composed with ``overrides``, as ``omniformer-train`` would see it.

    Works outside a Hydra app (tests, notebooks) and inside one — ``python -m benchmarks``'s own,
    whose search path is ``benchmarks/conf``: that app is set aside while ``train.yaml`` is composed
    from omniformer's configs, and restored afterwards.
    """
    from hydra import compose, initialize_config_module

    from omniformer.config import register_schemas

    register_schemas()  # the structured-config schemas train.yaml uses
    with hydra_set_aside(), initialize_config_module("omniformer.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides))


@contextlib.contextmanager
def hydra_set_aside() -> Iterator[None]:
    """Set a running Hydra app aside (``python -m benchmarks``'s) while omniformer's configs are
    composed or ``omniformer.train.run`` trains, and restore it — and its ``HydraConfig`` — afterwards."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    outer = GlobalHydra.instance().hydra
    saved = HydraConfig.instance().cfg
    GlobalHydra.instance().clear()
    try:
        yield
    finally:
        GlobalHydra.instance().clear()
        if outer is not None:
            GlobalHydra.instance().initialize(outer)
        HydraConfig.instance().cfg = saved


@dataclass
class Built:
    """One instantiated case: its composed config, set-up data module and task."""

    cfg: DictConfig
    datamodule: L.LightningDataModule
    task: L.LightningModule


@dataclass
class Workload:
    """A named training configuration to benchmark.

    Args:
        name: how results name it (``text_lm``, ``image_vit``...).
        overrides: ``omniformer-train`` overrides that select task, data and their settings.
        data: optional config node (with ``_target_``) that replaces the composed ``data`` node, for
            data modules that have no YAML in ``conf/data`` (synthetic benchmark data).
        unit: what the headline throughput counts: ``tokens`` or ``samples``.
        model: the ``model=`` size used when a case names none (``null``: the overrides choose).
        description: one line for the results table.
    """

    name: str
    overrides: list[str] = field(default_factory=list)
    data: dict[str, Any] | None = None
    unit: str = "tokens"
    model: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.unit not in ("tokens", "samples"):
            raise ValueError(f"workload {self.name!r}: unit={self.unit!r}; choose 'tokens' or 'samples'")
        self.overrides = list(self.overrides)
        if self.data is not None and not isinstance(self.data, dict):
            self.data = OmegaConf.to_container(self.data, resolve=True)

    def config(self, model: str | None = None, overrides: Sequence[str] = ()) -> DictConfig:
        """Compose the train config of this workload at ``model`` size with extra ``overrides``.

        With a replacement ``data`` node, ``data.KEY=VALUE`` overrides apply to that node.
        """
        model = model or self.model
        extra = list(overrides)
        data_overrides = [o for o in extra if o.startswith("data.")] if self.data is not None else []
        rest = [o for o in extra if o not in data_overrides]
        # sample_tokens=0: no text sample at the end of fit (not part of what is measured).
        head = [f"model={model}"] if model else []
        cfg = compose_train([*head, *self.overrides, *rest])
        with open_dict(cfg):
            if "sample_tokens" in cfg.task:
                cfg.task.sample_tokens = 0
            if self.data is not None:
                cfg.data = OmegaConf.create(self.data)
            for item in data_overrides:
                key, _, value = item.partition("=")
                if key.split(".")[1] not in cfg.data:
                    raise ValueError(f"workload {self.name!r}: {key} is not a key of its data config")
                OmegaConf.update(cfg, key, yaml.safe_load(value), merge=False)
        return cfg

    @staticmethod
    def build_data(cfg: DictConfig) -> L.LightningDataModule:
        """Instantiate and set up the data module; store its ``spec()`` as ``cfg.data_spec``."""
        datamodule = instantiate(cfg.data)
        datamodule.setup("fit")
        with open_dict(cfg):
            cfg.data_spec = datamodule.spec()
        return datamodule

    @staticmethod
    def build(cfg: DictConfig, seed: int | None = None) -> Built:
        """Instantiate and set up the data module, then the task (seeded: same init every time).

        Depends on ``cfg`` alone, so ``Workload.build(cfg)`` builds any composed train config."""
        L.seed_everything(cfg.seed if seed is None else seed, verbose=False)
        datamodule = Workload.build_data(cfg)
        L.seed_everything(cfg.seed if seed is None else seed, verbose=False)
        task = instantiate(cfg.task)
        return Built(cfg, datamodule, task)


def _nbytes(batch) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.numel() * batch.element_size()
    if isinstance(batch, (list, tuple)):
        return sum(_nbytes(item) for item in batch)
    return 0


def prefetch_batches(datamodule: L.LightningDataModule, count: int, max_bytes: int = 2 * 2**30) -> list:
    """The first ``count`` training batches the data module's loader yields (re-iterating if it ends).

    A fresh loader starts where a fresh ``Trainer`` starts, so these are the batches the Lightning
    run sees (for ``RandomWindows``: batch ``i`` is a pure function of ``(seed, i)``). Stops early
    once ``max_bytes`` are held (large image batches); loops then cycle through what was fetched.
    """
    batches: list = []
    held = 0
    while len(batches) < count and held < max_bytes:
        before = len(batches)
        for batch in itertools.islice(iter(datamodule.train_dataloader()), count - len(batches)):
            batches.append(batch)
            held += _nbytes(batch)
            if held >= max_bytes:
                break
        if len(batches) == before:
            raise ValueError(f"{type(datamodule).__name__}'s train loader yields no batches")
    return batches


def batch_shape(task: L.LightningModule, batch) -> tuple[int, int]:
    """``(samples, tokens per sample)`` the backbone sees for ``batch`` (from one ``model_step``)."""
    seen: dict[str, tuple[int, int]] = {}

    def hook(module, args, kwargs):
        tokens = args[0] if args else kwargs["tokens"]
        seen["shape"] = tuple(tokens.x.shape[:2])

    handle = task.net.backbone.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            task.model_step(batch)
    finally:
        handle.remove()
    return seen["shape"]


def build_workloads(nodes: DictConfig | dict) -> dict[str, Workload]:
    """Instantiate the ``workloads:`` registry of ``bench.yaml`` (name → :class:`Workload`)."""
    registry = {}
    for name, node in nodes.items():
        if node is None:
            continue
        node = OmegaConf.create(node) if isinstance(node, dict) else node
        if "_target_" in node:
            workload = instantiate(node, _convert_="all")
        else:
            workload = Workload(**OmegaConf.to_container(node, resolve=True))
        if not isinstance(workload, Workload):
            raise TypeError(f"workloads.{name} must build a benchmarks.Workload, got {type(workload)}")
        if workload.name != name:
            raise ValueError(f"workloads.{name} has name {workload.name!r}; the key and the name must match")
        registry[name] = workload
    return registry
