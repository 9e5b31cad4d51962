"""Timed loops: a hand-written PyTorch training loop, omniformer's Lightning path, and inference.

All three time the same thing the same way: the wall time from the end of the last warm-up step to
the end of the last step, split per step. On the CPU the clock is ``time.perf_counter``; on a GPU
each step end records a CUDA event (no host synchronisation inside the loop; the events are read
once at the end). ``data_seconds`` is host time outside the step body: fetching the next batch and
copying it to the device — for Lightning, everything the loop does between ``on_train_batch_end``
and the next ``on_train_batch_start`` (batch fetch, transfer, scheduler, logging bookkeeping).

On a GPU the runs can also count host synchronisations inside the timed steps with
``torch.cuda.set_sync_debug_mode("warn")``: a fast step issues none.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from omegaconf import DictConfig, open_dict

from benchmarks.machine import PeakMemory
from omniformer.callbacks import StepSeed, Throughput
from omniformer.tasks.optim import build_optimizer
from omniformer.train import build_callbacks, build_loggers

SDPA_BACKENDS = ("default", "math", "flash", "efficient", "cudnn")
PRECISIONS = ("32-true", "bf16-mixed")


@dataclass
class Measurement:
    """Timings of the timed (post-warm-up) steps of one or more runs of a loop."""

    step_seconds: list[float] = field(default_factory=list)
    data_seconds: float = 0.0
    peak_mem_mib: float = 0.0
    mem_kind: str = "rss"
    host_syncs: int | None = None
    cpu_seconds: float | None = None

    @property
    def steps(self) -> int:
        """Number of timed steps."""
        return len(self.step_seconds)

    @property
    def wall_seconds(self) -> float:
        """Total time of the timed steps."""
        return sum(self.step_seconds)

    @property
    def median_step(self) -> float:
        """Median seconds per step (robust to other processes' bursts)."""
        return statistics.median(self.step_seconds)

    @property
    def mean_step(self) -> float:
        """Mean seconds per step (everything counted, bursts included)."""
        return self.wall_seconds / max(self.steps, 1)

    @property
    def data_fraction(self) -> float:
        """Share of the wall time spent outside the step body (see module docstring)."""
        return min(self.data_seconds / self.wall_seconds, 1.0) if self.wall_seconds > 0 else 0.0

    @property
    def cpu_step(self) -> float | None:
        """Process CPU seconds per timed step (``None`` on a GPU)."""
        return None if self.cpu_seconds is None else self.cpu_seconds / max(self.steps, 1)

    def merge(self, other: Measurement) -> Measurement:
        """Both runs' steps together (rounds of the same variant)."""
        syncs = None
        if self.host_syncs is not None or other.host_syncs is not None:
            syncs = (self.host_syncs or 0) + (other.host_syncs or 0)
        cpu = None
        if self.cpu_seconds is not None and other.cpu_seconds is not None:
            cpu = self.cpu_seconds + other.cpu_seconds
        return Measurement(
            self.step_seconds + other.step_seconds,
            self.data_seconds + other.data_seconds,
            max(self.peak_mem_mib, other.peak_mem_mib),
            other.mem_kind,
            syncs,
            cpu,
        )


class StepClock:
    """Per-step end marks from the end of warm-up step ``warmup`` on; CUDA events on a GPU."""

    def __init__(self, device: torch.device, warmup: int) -> None:
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1 step (the first timed step starts after it), got {warmup}")
        self.device, self.warmup, self.count = device, warmup, 0
        self._host: list[float] = []
        self._cpu: list[float] = []
        self._events: list[torch.cuda.Event] = []

    @property
    def timing(self) -> bool:
        """Whether the next step is a timed one."""
        return self.count >= self.warmup

    def mark(self) -> None:
        """Call at the end of every step."""
        self.count += 1
        if self.count < self.warmup:
            return
        if self.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._events.append(event)
        else:
            self._host.append(time.perf_counter())
            self._cpu.append(time.process_time())

    def step_seconds(self) -> list[float]:
        """Durations of the timed steps (synchronises once, on a GPU)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return [a.elapsed_time(b) / 1000 for a, b in zip(self._events, self._events[1:])]
        return [b - a for a, b in zip(self._host, self._host[1:])]

    def cpu_seconds(self) -> float | None:
        """CPU time this process (all its threads, not loader workers) spent in the timed steps.

        Unlike wall time it hardly moves when other processes compete for the cores, so on a busy
        machine it is the steadier measure of how much work a loop does. ``None`` on a GPU.
        """
        return self._cpu[-1] - self._cpu[0] if len(self._cpu) > 1 else None


class SyncCounter:
    """Counts synchronising CUDA calls while armed (``torch.cuda.set_sync_debug_mode('warn')``)."""

    def __init__(self, device: torch.device, enabled: bool) -> None:
        self.enabled = enabled and device.type == "cuda"
        self._records: list[warnings.WarningMessage] = []
        self._armed = False
        self._catcher: contextlib.AbstractContextManager | None = None

    def __enter__(self) -> SyncCounter:
        if self.enabled:
            self._catcher = warnings.catch_warnings(record=True)
            self._records = self._catcher.__enter__()
            warnings.simplefilter("always")
        return self

    def arm(self) -> None:
        """Start counting (at the first timed step)."""
        if self.enabled and not self._armed:
            torch.cuda.set_sync_debug_mode("warn")
            self._armed = True

    def disarm(self) -> None:
        """Stop counting."""
        if self._armed:
            torch.cuda.set_sync_debug_mode("default")
            self._armed = False

    def __exit__(self, *exc) -> None:
        self.disarm()
        if self._catcher is not None:
            self._catcher.__exit__(*exc)

    @property
    def count(self) -> int | None:
        """Synchronising calls seen (``None`` when not counted)."""
        if not self.enabled:
            return None
        return sum("synchroniz" in str(w.message) for w in self._records)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of a Lightning ``precision`` string, for the hand-written loop."""
    if precision == "32-true":
        return contextlib.nullcontext()
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    raise ValueError(f"precision={precision!r} is not benchmarked; choose one of {PRECISIONS}")


def sdpa_backend(name: str | None) -> contextlib.AbstractContextManager:
    """Restrict ``scaled_dot_product_attention`` to one kernel (``default``: torch chooses)."""
    if name in (None, "default"):
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = {
        "math": SDPBackend.MATH,
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
    }
    if name not in backends:
        raise ValueError(f"sdpa backend {name!r} is unknown; choose one of {SDPA_BACKENDS}")
    return sdpa_kernel(backends[name])


def to_device(batch, device: torch.device):
    """Move a batch (tensors in tuples / lists) to ``device``; asynchronous from pinned memory."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(item, device) for item in batch)
    return batch


def _cycle(batches: Iterable) -> Iterator:
    """Endless: ``batches`` again and again (a list, a loader that ends with its epoch, ...)."""
    while True:
        yield from batches


class LoaderBatches:
    """The data module's own training loader as a batch source (its workers, transforms, collation).

    Re-created for every run (a fresh loader starts where a fresh ``Trainer`` does) and re-iterated
    when an epoch ends.
    """

    def __init__(self, datamodule: L.LightningDataModule) -> None:
        self.datamodule = datamodule

    def __iter__(self) -> Iterator:
        while True:
            yield from self.datamodule.train_dataloader()


def train_plain(
    task: L.LightningModule,
    batches: Iterable,
    *,
    steps: int,
    warmup: int,
    device: torch.device,
    precision: str = "32-true",
    clip: float | None = 1.0,
    check_syncs: bool = False,
    loss: Callable[[Any], torch.Tensor] | None = None,
    before_step: Callable[[int], object] | None = None,
) -> Measurement:
    """A hand-written training loop over ``task.net``: the task's objective, backward, clip, AdamW, schedule.

    The loss is ``task.model_step(batch)[0]`` — the function the task's ``training_step`` computes —
    and the optimizer and schedule are the task's own (same AdamW groups, fused where available), so
    both loops do the same arithmetic; only the loop around it differs. ``batches``: batches fetched
    in advance (cycled), or anything re-iterable that yields them as it goes (:class:`LoaderBatches`,
    a ``DataLoader``), re-iterated when it ends. ``loss``: another function of a batch, for a study
    that feeds the model differently. ``before_step``: called with the step's index (warm-up
    included) before it starts, for work a loop does between steps (nanoGPT's ``estimate_loss``);
    its time counts in that step's. Move the model to ``device`` (and compile it) before calling.
    """
    loss = loss or (lambda batch: task.model_step(batch)[0])
    net = task.net.train()
    built = build_optimizer(net, task.optim, warmup + steps)
    optimizer, scheduler = built["optimizer"], built["lr_scheduler"]["scheduler"]
    source = _cycle(batches)
    clock, data = StepClock(device, warmup), 0.0
    params = [p for p in net.parameters() if p.requires_grad]
    with PeakMemory(device) as memory, SyncCounter(device, check_syncs) as syncs:
        for index in range(warmup + steps):
            if clock.timing:
                syncs.arm()
            if before_step is not None:
                before_step(index)
            start = time.perf_counter()
            batch = to_device(next(source), device)
            if clock.timing:
                data += time.perf_counter() - start
            with autocast(device, precision):
                value = loss(batch)
            value.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            clock.mark()
        syncs.disarm()
        seconds = clock.step_seconds()
    return Measurement(seconds, data, memory.peak_mib, memory.kind, syncs.count, clock.cpu_seconds())


class StepTimer(L.Callback):
    """Marks every training (or predict) step's end for :class:`StepClock`; sums the time between steps."""

    def __init__(self, device: torch.device, warmup: int, syncs: SyncCounter) -> None:
        self.clock, self.syncs = StepClock(device, warmup), syncs
        self.data_seconds = 0.0
        self._end: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._started()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._ended()

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._started()

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._ended()

    def on_train_end(self, trainer, pl_module) -> None:
        self.syncs.disarm()

    def _started(self) -> None:
        if self.clock.timing and self._end is not None:
            self.data_seconds += time.perf_counter() - self._end

    def _ended(self) -> None:
        self.clock.mark()
        if self.clock.timing:
            self.syncs.arm()
        self._end = time.perf_counter()


def _redirected(cfg: DictConfig, root_dir: str) -> DictConfig:
    """A copy of ``cfg`` whose callbacks and loggers write into ``root_dir``, not Hydra's run folder."""
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        for name, node in (cfg.get("callbacks") or {}).items():
            if node is None:
                continue
            if "dirpath" in node:
                node.dirpath = f"{root_dir}/checkpoints"
            if "out_dir" in node:
                node.out_dir = f"{root_dir}/{name}"
        for node in cfg.get("logger") or []:
            node.save_dir = root_dir
    return cfg


def train_callbacks(cfg: DictConfig, root_dir: str) -> list[L.Callback]:
    """The callbacks ``omniformer-train`` runs with, writing into ``root_dir``.

    The configured ones (``cfg.callbacks``: checkpointing, non-finite guard, learning-rate monitor,
    progress bar, ...), built by omniformer-train's own :func:`~omniformer.fit_run.build_callbacks`, plus
    the per-step ones ``train.py`` adds itself: throughput and per-step seeding.
    """
    return [*build_callbacks(_redirected(cfg, root_dir)), Throughput(), StepSeed(int(cfg.seed))]


def train_loggers(cfg: DictConfig, root_dir: str) -> list:
    """The loggers ``omniformer-train`` runs with (``train.py``'s :func:`~omniformer.train.build_loggers`),
    writing into ``root_dir``."""
    return build_loggers(_redirected(cfg, root_dir))


def lightning_trainer(
    cfg: DictConfig,
    *,
    steps: int,
    device: torch.device,
    precision: str,
    callbacks: Sequence[L.Callback],
    loggers: Sequence = (),
    summary: bool = False,
    root_dir: str,
) -> L.Trainer:
    """The ``Trainer`` of ``cfg.trainer`` for a timed run without validation.

    It runs exactly ``callbacks`` and ``loggers``: with none, no logger, checkpoints, progress bar or
    model summary — the loop itself. Checkpointing and the progress bar are on when a callback
    provides them (:func:`train_callbacks`).
    """
    return instantiate(
        cfg.trainer,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision=precision,
        max_steps=steps,
        max_epochs=-1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        enable_progress_bar=any(isinstance(c, ProgressBar) for c in callbacks),
        enable_model_summary=summary,
        logger=list(loggers) or False,
        callbacks=list(callbacks),
        default_root_dir=root_dir,
    )


def train_lightning(
    cfg: DictConfig,
    task: L.LightningModule,
    datamodule: L.LightningDataModule,
    *,
    steps: int,
    warmup: int,
    device: torch.device,
    precision: str = "32-true",
    default_callbacks: bool = False,
    callbacks: Sequence[L.Callback] = (),
    check_syncs: bool = False,
) -> Measurement:
    """omniformer's path: ``Trainer.fit(task, datamodule)`` as ``omniformer-train`` builds them.

    ``default_callbacks=False``: the loop itself (plus ``callbacks``). ``True``: what
    ``omniformer-train`` runs with — :func:`train_callbacks`, :func:`train_loggers` and the model
    summary — writing into a temporary folder.
    """
    with (
        tempfile.TemporaryDirectory(prefix="omniformer-bench-") as root,
        SyncCounter(device, check_syncs) as syncs,
        warnings.catch_warnings(),
    ):
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        timer = StepTimer(device, warmup, syncs)
        defaults = train_callbacks(cfg, root) if default_callbacks else []
        trainer = lightning_trainer(
            cfg,
            steps=warmup + steps,
            device=device,
            precision=precision,
            callbacks=[*defaults, *callbacks, timer],
            loggers=train_loggers(cfg, root) if default_callbacks else (),
            summary=default_callbacks,
            root_dir=root,
        )
        with PeakMemory(device) as memory:
            trainer.fit(task, datamodule=datamodule)
            seconds = timer.clock.step_seconds()
        if trainer.global_step != warmup + steps:
            raise RuntimeError(f"Lightning ran {trainer.global_step} steps, {warmup + steps} were asked for")
    return Measurement(
        seconds, timer.data_seconds, memory.peak_mib, memory.kind, syncs.count, timer.clock.cpu_seconds()
    )


def infer(
    task: L.LightningModule,
    batches: Iterable,
    *,
    steps: int,
    warmup: int,
    device: torch.device,
    precision: str = "32-true",
    step: Callable[[Any], object] | None = None,
) -> Measurement:
    """Inference steps only (``eval`` mode, ``torch.inference_mode``): inference throughput.

    A step is ``task.model_step(batch)``, so any task plugs in without a forward pass written for
    its kind. It includes the loss: negligible next to the forward pass for classifiers and small
    vocabularies, a visible share for a 50k-vocabulary LM on a GPU (the fp32 cross-entropy over
    the logits). ``step``: another function of a batch (e.g. the task's ``predict_step``).
    ``batches`` as for :func:`train_plain`.
    """
    step = step or task.model_step
    net = task.net.eval()
    clock, source, data = StepClock(device, warmup), _cycle(batches), 0.0
    try:
        with PeakMemory(device) as memory, torch.inference_mode():
            for _ in range(warmup + steps):
                start = time.perf_counter()
                batch = to_device(next(source), device)
                if clock.timing:
                    data += time.perf_counter() - start
                with autocast(device, precision):
                    step(batch)
                clock.mark()
            seconds = clock.step_seconds()
    finally:
        net.train()
    return Measurement(seconds, data, memory.peak_mib, memory.kind, None, clock.cpu_seconds())


def infer_lightning(
    task: L.LightningModule,
    datamodule: L.LightningDataModule,
    *,
    warmup: int,
    device: torch.device,
    precision: str = "32-true",
) -> Measurement:
    """omniformer's inference path: ``Trainer.predict`` (the task's ``predict_step``) over the data
    module's predict loader, with no logger or callbacks besides the timer."""
    timer = StepTimer(device, warmup, SyncCounter(device, False))
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    with PeakMemory(device) as memory:
        trainer.predict(task, datamodule=datamodule, return_predictions=False)
        seconds = timer.clock.step_seconds()
    return Measurement(
        seconds, timer.data_seconds, memory.peak_mib, memory.kind, None, timer.clock.cpu_seconds()
    )
