"""One member's training loader inside a sampled multi-task epoch, resumable mid-epoch."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from lightning.fabric.utilities.data import sized_len

from omniformer.data.mixing import TaskSchedule
from omniformer.resume import ResumableLoader


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
    them; any other member (e.g. the LM's :class:`~omniformer.data.windows.WindowLoader`, which
    starts at its batch 0 here) is iterated afresh and the served batches are loaded and discarded,
    which costs one batch load each, and is exact only if the member's pass is deterministic (LM
    windows are: batch ``i`` depends on ``(seed, i)``).

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
