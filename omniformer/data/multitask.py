"""Several data modules as one, for multi-task training on a shared backbone.

:class:`MultiTaskDataModule` wraps one data module per member task (text LM, MNIST, spoken
digits...) and combines their loaders with Lightning's :class:`CombinedLoader`, so each training
batch is a dict ``{member name: member batch}``:

* ``sampling=proportional | uniform | weights`` — **one task per step**, with shares ``p_i``
  proportional to the members' training batches per epoch (examples-proportional mixing, Raffel
  et al. 2020, T5), equal, or ``weights``: every epoch gives member ``i`` exactly ``p_i`` of its
  steps (rounded by largest remainder) in a seeded random order. Every member's loader is wrapped in
  a :class:`ScheduledLoader` that yields its next batch on the steps the schedule gives it and
  ``None`` on the others (no batch is loaded for nothing); the combined batch holds one real entry.
* ``sampling=all`` — **every task every step**, combined as Lightning's ``mode`` says:
  ``max_size_cycle`` (the epoch lasts as long as the longest loader; shorter ones start over),
  ``min_size`` (stop with the shortest) or ``max_size`` (exhausted members give ``None``).

Validation and test run every member in turn (``CombinedLoader`` mode ``sequential``). ``spec()``
is the members' specs by name (``data_spec.<member>.num_classes``...), ``artifacts()`` their files
prefixed by the member name (``mnist/classes.json``).

Training resumes mid-epoch exactly (see :mod:`omniformer.resume`): in sampled mode each
:class:`ScheduledLoader` checkpoints its place in the schedule and in its member's loader;
``sampling=all`` is exact when every member is map-style (see :meth:`MultiTaskDataModule.train_dataloader`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import lightning as L
import torch
from lightning.fabric.utilities.data import sized_len
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.combined_loader import CombinedLoader

from omniformer.resume import ResumableLoader, resumable_loader

SamplingKind = Literal["proportional", "uniform", "weights", "all"]
ModeKind = Literal["max_size_cycle", "min_size", "max_size"]
SAMPLING = ("proportional", "uniform", "weights", "all")
MODES = ("max_size_cycle", "min_size", "max_size")


def sampling_probabilities(
    sampling: str,
    names: Sequence[str],
    sizes: Mapping[str, int] | None = None,
    weights: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Each member's share of the steps (one member per step).

    Args:
        sampling: ``proportional`` (∝ ``sizes``), ``uniform`` or ``weights`` (∝ ``weights``).
        names: the members.
        sizes: training batches per epoch of each member (``proportional``).
        weights: a non-negative weight per member, not all zero (``weights``).

    Raises:
        ValueError: an unknown mode, a weight that is negative, not a number, missing or for an
            unknown member, or weights that are all zero (each naming the key and value).
    """
    if sampling == "uniform":
        raw = {name: 1.0 for name in names}
    elif sampling == "proportional":
        if sizes is None:
            raise ValueError("data.sampling=proportional needs the members' sizes")
        raw = {name: float(sizes[name]) for name in names}
    elif sampling == "weights":
        if not weights:
            raise ValueError(
                "data.sampling=weights needs data.weights, a weight per task, e.g. "
                f"data.weights='{{{', '.join(f'{n}: 1' for n in names)}}}'"
            )
        unknown = sorted(set(weights) - set(names))
        if unknown:
            raise ValueError(f"data.weights.{unknown[0]}: no such task (tasks: {', '.join(names)})")
        raw = {}
        for name in names:
            if name not in weights:
                raise ValueError(
                    f"data.weights has no weight for task {name!r} (give every task one; 0 = never drawn)"
                )
            value = weights[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"data.weights.{name}={value!r}: must be a finite number >= 0")
            if value < 0:
                raise ValueError(f"data.weights.{name}={value}: sampling weights must be >= 0")
            raw[name] = float(value)
    else:
        raise ValueError(f"data.sampling={sampling!r}; choose one of {', '.join(SAMPLING)}")
    total = sum(raw.values())
    if total <= 0:
        shown = ", ".join(f"{k}={v:g}" for k, v in raw.items())
        raise ValueError(
            f"data.sampling={sampling}: the sampling weights are all zero ({shown}); no task would train"
        )
    return {name: value / total for name, value in raw.items()}


class TaskSchedule:
    """Which member trains at each step of an epoch: each member's share of the ``steps``, in a
    seeded random order.

    A member with probability ``p`` trains ``p · steps`` steps of every epoch, rounded so that the
    counts add up to ``steps`` (largest remainders first), so ``data.weights='{a: 1000, b: 400}'``
    with 1,400 steps per epoch gives exactly 1,000 and 400. The order of epoch ``e`` depends only on
    ``(seed, e)``, so a run repeats its task sequence.
    """

    def __init__(self, probabilities: Sequence[float], steps: int, seed: int) -> None:
        if steps < 1:
            raise ValueError(f"data.steps_per_epoch must be >= 1, got {steps}")
        self.probabilities = torch.tensor(list(probabilities), dtype=torch.float64)
        self.steps, self.seed = steps, seed
        self.counts = step_counts(self.probabilities, steps)
        self._cache: tuple[int, list[int]] | None = None

    def order(self, epoch: int) -> list[int]:
        """Member index of every step of ``epoch``."""
        if self._cache is None or self._cache[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            members = torch.repeat_interleave(torch.arange(len(self.counts)), self.counts)
            self._cache = (epoch, members[torch.randperm(self.steps, generator=generator)].tolist())
        return self._cache[1]


def step_counts(probabilities: torch.Tensor, steps: int) -> torch.Tensor:
    """Steps of each member in an epoch of ``steps``: ``probabilities · steps`` rounded down, the
    steps left over going to the largest remainders (ties to the earlier member)."""
    exact = probabilities / probabilities.sum() * steps
    counts = exact.floor().long()
    left = steps - int(counts.sum())
    if left:
        remainders = exact - counts
        order = sorted(range(len(counts)), key=lambda i: (-float(remainders[i]), i))
        counts[order[:left]] += 1
    return counts


class ScheduledLoader:
    """One member's loader as the ``CombinedLoader`` sees it in sampled mode.

    Yields the member's next batch on the steps ``schedule`` gives it and ``None`` on every other
    step, so all members have the same length and a step's combined batch holds exactly one real
    batch. The member's own iterator survives epochs of the schedule and restarts when the member's
    loader is exhausted (the next *member pass*; a sampler with ``set_epoch`` gets the pass number,
    so a :class:`~omniformer.resume.ResumableLoader`'s pass ``p`` is a pure function of its seed and
    ``p``); endless loaders (LM windows) simply continue.

    The loader is stateful (Lightning stores ``state_dict()`` in checkpoints): the schedule epoch,
    the steps of it served, the member pass and the member batches of that pass served. After
    ``load_state_dict`` the next iteration continues exactly there. A
    :class:`~omniformer.resume.ResumableLoader` member skips the served batches without loading
    them; any other member (e.g. the LM's ``RandomWindows``) is iterated afresh and the served
    batches are loaded and discarded, which costs one batch load each, and is exact only if the
    member's pass is deterministic (LM windows are: batch ``i`` depends on ``(seed, i)``).

    Args:
        loader: the member's training loader.
        schedule: the shared task schedule.
        index: this member's index in the schedule.
        name: the member's name (for messages).
        epoch: returns the trainer's current epoch, or ``None`` outside a trainer (then each pass
            over the loader is the next epoch).
    """

    def __init__(
        self,
        loader,
        schedule: TaskSchedule,
        index: int,
        name: str,
        epoch: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.loader, self.schedule, self.index, self.name, self.epoch = loader, schedule, index, name, epoch
        self._member_iter: Iterator | None = None  # not `_iterator`: Lightning resets that name
        self._member_pass = 0  # how many times the member's iterator restarted
        self._member_served = 0  # member batches of the current pass handed out
        self._schedule_epoch: int | None = None  # the schedule epoch being iterated
        self._steps_served = 0  # steps of that schedule epoch handed out
        self._passes = 0  # schedule epochs started (the epoch outside a trainer)
        self._restored: dict[str, int] | None = None  # a loaded position, applied by the next iteration

    def __len__(self) -> int:
        return self.schedule.steps

    def __iter__(self) -> Iterator[Any]:
        # A generator: Lightning calls iter() before it loads a checkpoint's loader state, so the
        # position is read when the first step is drawn, not here.
        epoch, start = self._start()
        order = self.schedule.order(epoch)
        for member in order[start:]:
            batch = self._next() if member == self.index else None
            self._steps_served += 1  # counted when handed out, like ResumableLoader's batches
            yield batch

    def _start(self) -> tuple[int, int]:
        """The schedule epoch and step to begin at: a restored position, else the next epoch."""
        if self._restored is not None:
            state, self._restored = self._restored, None
            epoch, start = state["epoch"], state["steps"]
            if start >= self.schedule.steps:  # written after the epoch's last step
                epoch, start = epoch + 1, 0
            self._member_iter = None
            self._member_pass, self._member_served = state["member_pass"], state["member_batches"]
        else:
            epoch, start = self._next_epoch(), 0
        self._schedule_epoch, self._steps_served, self._passes = epoch, start, epoch + 1
        return epoch, start

    def _next_epoch(self) -> int:
        """The schedule epoch a fresh iteration uses: the trainer's, else the count of passes."""
        trainer_epoch = self.epoch()
        return self._passes if trainer_epoch is None else trainer_epoch

    def _next(self) -> Any:
        if self._member_iter is None:
            self._start_member_pass(skip=self._member_served)
        try:
            batch = next(self._member_iter)
        except StopIteration:
            self._member_pass += 1
            self._start_member_pass(skip=0)
            try:
                batch = next(self._member_iter)
            except StopIteration:
                raise ValueError(f"task {self.name!r}: its training loader yields no batches") from None
        self._member_served += 1
        return batch

    def _start_member_pass(self, skip: int) -> None:
        """(Re)create the member's iterator for pass ``self._member_pass``, ``skip`` batches in."""
        length = sized_len(self.loader)
        if length is not None and length > 0 and skip >= length:  # the pass had ended: start the next
            self._member_pass, skip = self._member_pass + 1, 0
        self._member_served = skip
        sampler = getattr(self.loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self._member_pass)
        resumable = isinstance(self.loader, ResumableLoader)
        if resumable and skip:
            self.loader.load_state_dict({"epoch": self._member_pass, "batches": skip})
        self._member_iter = iter(self.loader)
        if resumable:
            return
        for served in range(skip):  # not resumable on its own: load and discard what was served
            try:
                next(self._member_iter)
            except StopIteration:
                raise ValueError(
                    f"task {self.name!r}: its training loader ended after {served} batches, but the "
                    f"checkpoint says {skip} of this pass were trained on; was the data changed?"
                ) from None

    def state_dict(self) -> dict[str, int]:
        """The position: schedule ``epoch``, ``steps`` of it served, ``member_pass``, ``member_batches``."""
        if self._restored is not None:  # loaded but not iterated yet: still the same position
            return dict(self._restored)
        if self._schedule_epoch is None:  # not iterated yet
            return {"epoch": int(self._next_epoch()), "steps": 0, "member_pass": 0, "member_batches": 0}
        return {
            "epoch": int(self._schedule_epoch),
            "steps": int(self._steps_served),
            "member_pass": int(self._member_pass),
            "member_batches": int(self._member_served),
        }

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Continue at ``state`` (from :meth:`state_dict`) when the loader is next iterated.

        Raises:
            ValueError: ``state`` lacks a key or holds a negative number.
        """
        keys = ("epoch", "steps", "member_pass", "member_batches")
        missing = [key for key in keys if key not in state]
        if missing:
            raise ValueError(
                f"task {self.name!r}: the checkpoint's loader state {dict(state)} lacks "
                f"{', '.join(missing)}; was it written by another data setup?"
            )
        values = {key: int(state[key]) for key in keys}
        negative = [f"{key}={value}" for key, value in values.items() if value < 0]
        if negative:
            shown = ", ".join(negative)
            raise ValueError(f"task {self.name!r}: bad loader state in the checkpoint ({shown})")
        self._restored = values


def loader_batches(name: str, datamodule: L.LightningDataModule, loader) -> int:
    """Training batches in one epoch of a member's loader (``proportional`` sampling needs them).

    Endless language-model windows have no length; their epoch is every training token seen once
    as a target: ``len(train_ids) / (block_size · batch_size)`` batches.
    """
    try:
        return max(len(loader), 1)
    except TypeError:
        pass
    ids = getattr(datamodule, "train_ids", None)
    block, batch = getattr(datamodule, "block_size", None), getattr(datamodule, "batch_size", None)
    if ids is not None and block and batch:
        return max(len(ids) // (block * batch), 1)
    raise ValueError(
        f"task {name!r}: its training loader has no length, so data.sampling=proportional cannot size it; "
        "use data.sampling=uniform or data.sampling=weights"
    )


class MultiTaskDataModule(L.LightningDataModule):
    """The data modules of several member tasks, combined with Lightning's ``CombinedLoader``.

    Args:
        members: member name → its data module (built by Hydra from ``data.members.<name>``).
        sampling: ``proportional``, ``uniform`` or ``weights`` (one task per step, each member
            with that share of every epoch's steps) or ``all`` (every task every step, combined as
            ``mode`` says).
        weights: member name → sampling weight (``sampling=weights``); >= 0, not all zero.
        mode: ``CombinedLoader`` mode with ``sampling=all``: ``max_size_cycle``, ``min_size`` or
            ``max_size``.
        steps_per_epoch: steps in one (sampled) epoch; ``None`` = the members' training batches added
            up, so an epoch sees about as many batches as one pass over every member.
        seed: seed of the order of the members' steps.
    """

    def __init__(
        self,
        members: Mapping[str, L.LightningDataModule],
        sampling: SamplingKind = "proportional",
        weights: Mapping[str, float] | None = None,
        mode: ModeKind = "max_size_cycle",
        steps_per_epoch: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not members:
            raise ValueError("data.members is empty: list the tasks to train, e.g. tasks='[text_lm, mnist]'")
        for name, member in members.items():
            if not isinstance(member, L.LightningDataModule):
                raise TypeError(
                    f"data.members.{name} is a {type(member).__name__}, not a LightningDataModule; "
                    "give it a _target_"
                )
        if sampling not in SAMPLING:
            raise ValueError(f"data.sampling={sampling!r}; choose one of {', '.join(SAMPLING)}")
        if mode not in MODES:
            raise ValueError(
                f"data.mode={mode!r}; choose one of {', '.join(MODES)} (CombinedLoader's 'sequential' mode "
                "cannot train: Lightning's fit loop refuses it)"
            )
        if steps_per_epoch is not None and steps_per_epoch < 1:
            raise ValueError(f"data.steps_per_epoch must be >= 1 (or null), got {steps_per_epoch}")
        self.members = dict(members)
        self.names = list(self.members)
        self.sampling, self.mode, self.steps_per_epoch, self.seed = sampling, mode, steps_per_epoch, seed
        self.weights = None if weights is None else {str(k): v for k, v in dict(weights).items()}
        if sampling == "weights" or weights is not None:
            sampling_probabilities("weights", self.names, weights=self.weights)  # bad weights fail first
        self.probabilities: dict[str, float] | None = None

    # -- Lightning ----------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        for member in self.members.values():
            member.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        for member in self.members.values():
            if member.trainer is None and self.trainer is not None:
                member.trainer = self.trainer
            member.setup(stage)

    def spec(self) -> dict[str, dict]:
        """Each member's ``spec()`` under its name: ``data_spec.<member>.<key>`` in the config."""
        return {
            name: dict(member.spec()) if hasattr(member, "spec") else {}
            for name, member in self.members.items()
        }

    def artifacts(self) -> dict[str, str]:
        """Every member's artifacts, as ``<member>/<file name>``."""
        out = {}
        for name, member in self.members.items():
            if hasattr(member, "artifacts"):
                out.update({f"{name}/{file}": text for file, text in member.artifacts().items()})
        return out

    def use_artifacts(self, artifacts: Mapping[str, str]) -> None:
        """Hand each member back the artifacts saved under its name."""
        for name, member in self.members.items():
            mine = {k.split("/", 1)[1]: v for k, v in artifacts.items() if k.startswith(name + "/")}
            if mine and hasattr(member, "use_artifacts"):
                member.use_artifacts(mine)

    def train_dataloader(self) -> CombinedLoader:
        """One task per step (sampled) or every task every step (``sampling=all``).

        Map-style member loaders are rebuilt as :class:`~omniformer.resume.ResumableLoader`
        objects seeded with the run's seed, so that a run resumed from a mid-epoch checkpoint can
        see the uninterrupted run's batches:

        * sampled mode is exact for every member, the LM's endless windows included (see
          :class:`ScheduledLoader`);
        * ``sampling=all`` is exact when every member is map-style (Lightning stores and restores
          each ``ResumableLoader``'s position). With an endless member (the text LM) it is not:
          the ``CombinedLoader`` then has no length, Lightning fetches a step ahead, and it does so
          before the checkpoint's loader positions are restored, so the map-style members do not
          continue where they were (the LM's windows do: they start at ``trainer.global_step``).
        """
        for member in self.members.values():
            if member.trainer is None and self.trainer is not None:
                member.trainer = self.trainer
        if self.sampling == "all":
            loaders = {name: self._all_member_loader(member) for name, member in self.members.items()}
            rank_zero_info(f"multi-task: every task every step ({', '.join(self.names)}), mode={self.mode}")
            return CombinedLoader(loaders, mode=self.mode)
        world = self.trainer.world_size if self.trainer is not None else 1
        if world > 1:
            raise ValueError(
                f"data.sampling={self.sampling} trains one task per step and does not shard member loaders "
                f"across {world} processes yet; use data.sampling=all (CombinedLoader shards DataLoaders) "
                "or one device"
            )
        loaders = {name: self._sampled_member_loader(member) for name, member in self.members.items()}
        sizes = {name: loader_batches(name, self.members[name], loader) for name, loader in loaders.items()}
        self.probabilities = sampling_probabilities(self.sampling, self.names, sizes, self.weights)
        steps = self.steps_per_epoch or sum(sizes.values())
        schedule = TaskSchedule([self.probabilities[n] for n in self.names], steps, self.seed)
        shown = ", ".join(
            f"{n} {int(count)} steps (share {self.probabilities[n]:.3f}; {sizes[n]} batches per pass)"
            for n, count in zip(self.names, schedule.counts)
        )
        rank_zero_info(
            f"multi-task: one task per step, sampling={self.sampling}: {shown}; {steps} steps/epoch"
        )
        scheduled = {
            name: ScheduledLoader(loader, schedule, i, name, self._trainer_epoch)
            for i, (name, loader) in enumerate(loaders.items())
        }
        return CombinedLoader(scheduled, mode="min_size")

    def _sampled_member_loader(self, member: L.LightningDataModule):
        """A member's training loader for sampled mode: resumable, and built as if at step 0.

        The member trains only on the steps drawn for it, so the run's ``global_step`` is not its
        position (the text LM would start its windows there); its trainer is detached while the
        loader is built, and :class:`ScheduledLoader` restores the member's own position.
        """
        trainer, member.trainer = member.trainer, None
        try:
            loader = member.train_dataloader()
        finally:
            member.trainer = trainer
        return resumable_loader(loader, self.seed)

    def _all_member_loader(self, member: L.LightningDataModule):
        """A member's training loader for ``sampling=all``, resumable when it is map-style."""
        loader = member.train_dataloader()
        trainer = self.trainer
        if trainer is None:
            return resumable_loader(loader, self.seed)
        if trainer.overfit_batches:  # Lightning swaps in a sequential sampler there
            return loader
        return resumable_loader(loader, self.seed, num_replicas=trainer.world_size, rank=trainer.global_rank)

    def _trainer_epoch(self) -> int | None:
        return int(self.trainer.current_epoch) if self.trainer is not None else None

    def _evaluation(self, split: str) -> CombinedLoader:
        loaders = {}
        for name, member in self.members.items():
            method = getattr(type(member), f"{split}_dataloader", None)
            if method is None or method is getattr(L.LightningDataModule, f"{split}_dataloader"):
                continue  # this member has no such split (a language model has no test split)
            loaders[name] = getattr(member, f"{split}_dataloader")()
        return CombinedLoader(loaders, mode="sequential")

    def val_dataloader(self) -> CombinedLoader:
        """Every member's validation loader, one after the other (``dataloader_idx`` = member)."""
        return self._evaluation("val")

    def test_dataloader(self) -> CombinedLoader:
        """The test loaders of the members that have a test split, one after the other."""
        return self._evaluation("test")

    def evaluation_names(self, split: str) -> list[str]:
        """Member names in the order of ``dataloader_idx`` for ``split`` (``val`` or ``test``)."""
        return [
            name
            for name, member in self.members.items()
            if getattr(type(member), f"{split}_dataloader", None)
            not in (None, getattr(L.LightningDataModule, f"{split}_dataloader"))
        ]
