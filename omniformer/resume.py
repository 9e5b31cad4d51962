"""Training loaders that resume mid-epoch exactly, for every map-style data module.

A run resumed from a checkpoint written in the middle of an epoch must see the same remaining
batches, in the same order, with the same augmentations, as the uninterrupted run. Lightning 2.6
restores the epoch and batch counters but restarts a plain ``DataLoader`` from the beginning of a
freshly shuffled epoch (and warns). A data module builds its training loader with
:func:`training_loader`, which rebuilds it (:func:`resumable_loader`) so that, for map-style datasets:

* the order of an epoch is a pure function of ``(seed, epoch)`` — the same permutation as
  ``torch.utils.data.DistributedSampler`` (so a 2-process run's global batches are a 1-process
  run's batches), or the data module's own sampler (e.g. audio length buckets) re-seeded per epoch;
* every sample is loaded under a torch / ``random`` / NumPy seed derived from ``(seed, epoch,
  index)``, so random augmentations (crops, flips, SpecAugment-style crops) repeat exactly and do
  not depend on the number of loader workers, nor consume the training step's random stream;
* the loader is *stateful* (``state_dict`` / ``load_state_dict``, Lightning's protocol for resumable
  loaders): the checkpoint records the epoch and how many batches of it were trained on, and a
  resumed run skips exactly those.

``seed`` is the run's seed as Lightning records it (:func:`run_seed`). Iterable datasets are left
alone: they must resume on their own, as the language model's window loader does
(:class:`omniformer.data.windows.WindowLoader`: batch ``i`` depends only on ``(seed, i)``, and its
state is the batch to start from).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

from omniformer.seeding import mix_seed, preserved_rng, seed_all, seeded_rng


class SeededDataset(Dataset):
    """A map-style dataset indexed by ``(index, seed)``: item ``index`` is loaded under ``seed``.

    A batch (``__getitems__``, which ``DataLoader`` uses when present) saves and restores the
    generator states once, not once per sample.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        with seeded_rng(seed):
            return self.dataset[index]

    def __getitems__(self, keys: list[tuple[int, int]]) -> list:
        items = []
        with preserved_rng():
            for index, seed in keys:
                seed_all(seed)
                items.append(self.dataset[index])
        return items


class ResumableSampler(DistributedSampler):
    """The epoch's order for this rank, as ``(index, sample seed)`` pairs, skipping what was trained on.

    A ``DistributedSampler`` (so Lightning leaves it in place in multi-process runs) that also works
    with one process. ``base`` decides the order of an epoch: ``RandomSampler`` → the seeded
    permutation ``DistributedSampler`` uses; ``SequentialSampler`` → ``0..n-1``; anything else (e.g.
    a length-bucketing sampler) → its own order, after ``set_epoch(epoch)`` and under a seed of
    ``(seed, epoch)``. The order is then split across ranks exactly as ``DistributedSampler`` does.

    Args:
        dataset: the (unwrapped) map-style dataset.
        base: the data module's sampler.
        seed: the run's seed.
        num_replicas: number of processes (ranks).
        rank: this process's rank.
        drop_last: drop the tail that does not divide evenly across ranks (else pad by repeating).
    """

    def __init__(
        self,
        dataset: Dataset,
        base: Sampler | None,
        seed: int,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
    ) -> None:
        shuffle = isinstance(base, RandomSampler) or (isinstance(base, DistributedSampler) and base.shuffle)
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
        )
        known = base is None or isinstance(base, (RandomSampler, SequentialSampler, DistributedSampler))
        self.base = None if known else base
        self.skip = 0  # samples of this rank's share of the epoch to skip (set when resuming)
        self.cycle = 0  # passes over the data already completed within this epoch (see ResumableLoader)

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch``; a position restored for this epoch is kept."""
        if epoch != self.epoch:
            self.epoch, self.skip, self.cycle = epoch, 0, 0

    @property
    def _pass(self) -> tuple[int, ...]:
        """What a repeated pass within one epoch adds to every seed (nothing for the first pass, so
        first passes keep the seeds they always had)."""
        return (self.cycle,) if self.cycle else ()

    def _shuffle_seed(self) -> int:
        """Seed of this pass's shuffled order: ``DistributedSampler``'s ``seed + epoch`` for an
        epoch's first pass, a mix with the pass number for repeated passes."""
        return mix_seed(self.seed, self.epoch, *self._pass) if self.cycle else self.seed + self.epoch

    def sample_seed(self, index: int) -> int:
        """Seed under which item ``index`` is loaded in this pass."""
        return mix_seed(self.seed, self.epoch, index, *self._pass)

    def epoch_order(self) -> list[int]:
        """Every index of the dataset in the order of the current epoch (before the split by rank)."""
        n = len(self.dataset)
        if self.base is not None:
            if hasattr(self.base, "set_epoch"):
                self.base.set_epoch(self.epoch)
            with seeded_rng(mix_seed(self.seed, self.epoch, *self._pass)):
                order = [int(i) for i in self.base]
            if sorted(order) != list(range(n)):
                raise ValueError(
                    f"{type(self.base).__name__} does not yield each of the {n} indices once per epoch; "
                    "it cannot be resumed mid-epoch"
                )
            return order
        if self.shuffle:
            generator = torch.Generator().manual_seed(self._shuffle_seed())
            return torch.randperm(n, generator=generator).tolist()
        return list(range(n))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self.epoch_order()
        if not self.drop_last:
            padding = self.total_size - len(order)
            order += (order * (padding // max(len(order), 1) + 1))[:padding]
        else:
            order = order[: self.total_size]
        mine = order[self.rank : self.total_size : self.num_replicas]
        start, self.skip = self.skip, 0
        for index in mine[start:]:
            yield index, self.sample_seed(index)


class ResumableLoader(DataLoader):
    """A ``DataLoader`` over a :class:`SeededDataset` with a :class:`ResumableSampler` that remembers
    its position: ``state_dict()`` is ``{"epoch", "batches", "cycle"}`` (batches handed to the
    training loop in that epoch's current pass), and ``load_state_dict`` makes the next iteration
    start right after them.

    Iterated again after running to its end without a ``set_epoch`` in between (Lightning's
    ``CombinedLoader`` cycling a shorter loader, a benchmark looping over epochs), the loader starts
    a new *pass* of the same epoch with its own order and sample seeds, a pure function of
    ``(seed, epoch, pass)``, rather than repeating the batches and augmentations it just gave.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches_served = 0
        self._finished: tuple[int, int] | None = None  # (epoch, pass) last iterated to its end

    def __iter__(self):
        sampler: ResumableSampler = self.sampler
        if self._finished == (sampler.epoch, sampler.cycle) and sampler.skip == 0:
            sampler.cycle += 1
        self.batches_served = sampler.skip // self.batch_size
        for batch in super().__iter__():
            self.batches_served += 1
            yield batch
        self._finished = (sampler.epoch, sampler.cycle)

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": int(self.sampler.epoch),
            "batches": int(self.batches_served),
            "cycle": int(self.sampler.cycle),
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler: ResumableSampler = self.sampler
        epoch, batches, cycle = int(state["epoch"]), int(state["batches"]), int(state.get("cycle", 0))
        if batches >= len(self):  # the checkpoint was written after the epoch's last batch
            epoch, batches, cycle = epoch + 1, 0, 0
        sampler.epoch, sampler.cycle = epoch, cycle
        sampler.skip = batches * self.batch_size
        self._finished = None


def resumable_loader(loader: DataLoader, seed: int, num_replicas: int = 1, rank: int = 0) -> DataLoader:
    """``loader`` rebuilt as a :class:`ResumableLoader`, or ``loader`` itself when that is impossible
    (iterable datasets resume on their own; a custom batch sampler is kept, with a warning)."""
    if isinstance(loader, ResumableLoader) or not isinstance(loader, DataLoader):
        return loader
    if isinstance(loader.dataset, IterableDataset):
        return loader
    if loader.batch_size is None or type(loader.batch_sampler) is not BatchSampler:
        warnings.warn(
            f"the training loader uses a custom batch sampler ({type(loader.batch_sampler).__name__}); "
            "a run resumed mid-epoch will not see exactly the batches the uninterrupted run saw "
            "(resuming from end-of-epoch checkpoints is exact)",
            stacklevel=2,
        )
        return loader
    sampler = ResumableSampler(
        loader.dataset, loader.sampler, seed, num_replicas=num_replicas, rank=rank, drop_last=False
    )
    options: dict[str, Any] = {
        "batch_size": loader.batch_size,
        "sampler": sampler,
        "num_workers": loader.num_workers,
        "collate_fn": loader.collate_fn,
        "pin_memory": loader.pin_memory,
        "drop_last": loader.drop_last,
        "timeout": loader.timeout,
        "worker_init_fn": loader.worker_init_fn,
        "multiprocessing_context": loader.multiprocessing_context,
        "persistent_workers": loader.persistent_workers,
        "pin_memory_device": loader.pin_memory_device,
        "in_order": getattr(loader, "in_order", True),
    }
    if loader.num_workers > 0:
        options["prefetch_factor"] = loader.prefetch_factor
    return ResumableLoader(SeededDataset(loader.dataset), **options)


def run_seed() -> int:
    """The run's seed as Lightning records it: ``PL_GLOBAL_SEED``, which ``seed_everything`` sets (0
    when unset). Lightning seeds the ``DistributedSampler`` it injects with the same value."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def training_loader(datamodule: L.LightningDataModule, loader: DataLoader, seed: int | None = None):
    """``loader``, the training loader ``datamodule`` built, made resumable for the trainer it is
    attached to (world size and rank; one process without a trainer).

    Every omniformer data module returns its training loader through this function; a plug-in data
    module does the same to resume mid-epoch exactly. ``seed`` defaults to :func:`run_seed`. With
    ``trainer.overfit_batches`` the loader is returned as it is (Lightning replaces its sampler with a
    sequential one there), as are loaders :func:`resumable_loader` cannot rebuild.
    """
    trainer = datamodule.trainer
    if trainer is not None and trainer.overfit_batches:
        return loader
    world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
    return resumable_loader(loader, run_seed() if seed is None else seed, num_replicas=world, rank=rank)


def make_resumable(datamodule, seed: int) -> None:
    """Deprecated: replaces ``datamodule.train_dataloader`` on this instance by one that returns
    :func:`training_loader` of its loader. Data modules now call :func:`training_loader` themselves
    (for omniformer's own this wrapper changes nothing); kept until ``benchmarks/image_throughput.py``
    stops calling it.
    """
    original = datamodule.train_dataloader
    if getattr(original, "_omniformer_resumable", False):
        return

    def train_dataloader():
        return training_loader(datamodule, original(), seed)

    train_dataloader._omniformer_resumable = True
    train_dataloader.__doc__ = original.__doc__
    datamodule.train_dataloader = train_dataloader


class RestoreLoaderState(L.Callback):
    """Hands the loader position stored in a checkpoint to the resumed training loader.

    Lightning loads stateful loaders' states while it sets up the training data after restoring a
    checkpoint. A task whose ``configure_optimizers`` reads ``trainer.estimated_stepping_batches``
    (every omniformer task: the schedule's length) makes Lightning set the data up *before* the
    restore, so that moment passes with nothing to load; this callback loads the states when
    training starts, before the first batch is drawn (the loader starts lazily).
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loop = trainer.fit_loop
        if getattr(loop, "_combined_loader_states_to_load", None) and loop._combined_loader is not None:
            loop._load_combined_loader_states()
