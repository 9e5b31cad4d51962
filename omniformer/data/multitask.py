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

from collections.abc import Mapping
from typing import Literal

import lightning as L
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.combined_loader import CombinedLoader

from omniformer.data.mixing import SAMPLING, TaskSchedule, sampling_probabilities
from omniformer.data.scheduled_loader import ScheduledLoader
from omniformer.data.splits import has_split
from omniformer.resume import resumable_loader

SamplingKind = Literal["proportional", "uniform", "weights", "all"]
ModeKind = Literal["max_size_cycle", "min_size", "max_size"]
MODES = ("max_size_cycle", "min_size", "max_size")


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
        root: the folder the members' data lies under (``data.root``; ``paths.data_dir`` by default).
            The members' configs take their roots from it (``${data.root}``, ``${data.root}/fsdd``), so
            one ``data.root=...`` points every member at its data; each member logs the folder it reads.
    """

    def __init__(
        self,
        members: Mapping[str, L.LightningDataModule],
        sampling: SamplingKind = "proportional",
        weights: Mapping[str, float] | None = None,
        mode: ModeKind = "max_size_cycle",
        steps_per_epoch: int | None = None,
        seed: int = 0,
        root: str | None = None,
    ) -> None:
        super().__init__()
        self.root = root
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

        Members build resumable training loaders themselves
        (:func:`~omniformer.resume.training_loader`); a map-style loader that is not yet one (a
        plug-in member's) is rebuilt as a :class:`~omniformer.resume.ResumableLoader` seeded with
        ``seed``, so that a run resumed from a mid-epoch checkpoint can see the uninterrupted run's
        batches:

        * sampled mode is exact for every member, the LM's endless windows included (see
          :class:`ScheduledLoader`);
        * ``sampling=all`` is exact when every member is map-style (Lightning stores and restores
          each ``ResumableLoader``'s position). With an endless member (the text LM) it is not:
          the ``CombinedLoader`` then has no length, Lightning fetches a step ahead, and it does so
          before the checkpoint's loader positions are restored, so the map-style members do not
          continue where they were (the LM's :class:`~omniformer.data.windows.WindowLoader` does:
          its state counts the batch fetched ahead out).
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
        """A member's training loader for sampled mode, resumable; :class:`ScheduledLoader` keeps
        the member's own position (a member trains only on the steps drawn for it)."""
        return resumable_loader(member.train_dataloader(), self.seed)

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
        loaders = {
            name: getattr(self.members[name], f"{split}_dataloader")()
            for name in self.evaluation_names(split)
        }
        return CombinedLoader(loaders, mode="sequential")

    def val_dataloader(self) -> CombinedLoader:
        """Every member's validation loader, one after the other (``dataloader_idx`` = member)."""
        return self._evaluation("val")

    def test_dataloader(self) -> CombinedLoader:
        """The test loaders of the members that have a test split, one after the other."""
        return self._evaluation("test")

    def evaluation_names(self, split: str) -> list[str]:
        """Member names in the order of ``dataloader_idx`` for ``split`` (``val`` or ``test``)."""
        return [name for name, member in self.members.items() if has_split(member, split)]
