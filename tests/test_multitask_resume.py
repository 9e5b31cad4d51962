"""Exact mid-epoch resume of multi-task training.

A :class:`ScheduledLoader` stopped after any number of steps, saved with ``state_dict()`` and
loaded into a fresh one must continue with exactly the uninterrupted sequence — across member
passes and schedule epochs, for map-style members (with random "augmentation") and iterable ones.
End to end, a multi-task run (text LM, MNIST, spoken digits) interrupted after a checkpoint and
resumed with ``ckpt_path=last`` repeats the uninterrupted run's per-step losses.
"""

from __future__ import annotations

import random
from itertools import islice
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from omniformer.data.mixing import TaskSchedule
from omniformer.data.multitask import MultiTaskDataModule
from omniformer.data.scheduled_loader import ScheduledLoader
from omniformer.data.text import RandomWindows, TextDataModule
from omniformer.resume import ResumableLoader, resumable_loader
from tests.helpers.callbacks import assert_same_curve, interrupted_and_resumed
from tests.helpers.overrides import MULTITASK_RESUMABLE

STEPS, EPOCHS = 7, 3  # a schedule of 7 steps per epoch, iterated 3 times


class NoisyItems(Dataset):
    """Item ``i`` is ``i`` plus torch, ``random`` and NumPy noise (a stand-in for augmentation);
    counts its reads."""

    def __init__(self, n: int = 10) -> None:
        self.n, self.reads = n, 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> torch.Tensor:
        self.reads += 1
        return torch.tensor([float(index), torch.rand(()).item(), random.random(), float(np.random.rand())])


class FiniteStream(IterableDataset):
    """Five deterministic items per pass: an iterable member that runs out and restarts."""

    def __iter__(self):
        return iter(torch.arange(5.0).view(5, 1) * 10)


def schedule() -> TaskSchedule:
    return TaskSchedule([0.6, 0.4], steps=STEPS, seed=5)


def map_member() -> ScheduledLoader:
    """Member 0, map-style: 10 noisy items in batches of 3 (4 batches per member pass), shuffled."""
    loader = resumable_loader(DataLoader(NoisyItems(), batch_size=3, shuffle=True), seed=11)
    return ScheduledLoader(loader, schedule(), index=0, name="noisy")


def windows_member() -> ScheduledLoader:
    """Member 1, endless LM windows (an iterable loader that cannot skip on its own)."""
    ids = np.arange(200, dtype=np.int16) % 37
    loader = DataLoader(RandomWindows(ids, block_size=4, batch_size=2, seed=3), batch_size=None)
    return ScheduledLoader(loader, schedule(), index=1, name="windows")


def stream_member() -> ScheduledLoader:
    """Member 0, a finite iterable loader of 5 batches per member pass."""
    return ScheduledLoader(DataLoader(FiniteStream(), batch_size=None), schedule(), index=0, name="stream")


def steps_of(loader: ScheduledLoader, count: int | None = None) -> list:
    """``count`` steps (default: ``EPOCHS`` epochs) over successive iterations of ``loader``."""
    count = STEPS * EPOCHS if count is None else count
    out: list = []
    while len(out) < count:
        out += list(islice(iter(loader), count - len(out)))
    return out


def same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return torch.equal(a, b)


def interrupted(make, stop: int) -> tuple[dict, list]:
    """The state after ``stop`` steps, and the steps a fresh loader given that state goes on with."""
    loader, first = make(), []
    while len(first) < stop:  # whole epochs, then a partial one left hanging (as a crash leaves it)
        iterator = iter(loader)
        first += list(islice(iterator, stop - len(first)))
    state = loader.state_dict()
    fresh = make()
    fresh.load_state_dict(state)
    return state, steps_of(fresh, STEPS * EPOCHS - stop)


@pytest.mark.parametrize("make", [map_member, windows_member, stream_member])
def test_scheduled_loader_resumes_the_uninterrupted_sequence_after_any_step(make):
    everything = steps_of(make())
    assert sum(step is not None for step in everything) >= 5
    states = []
    for stop in range(1, STEPS * EPOCHS):
        state, rest = interrupted(make, stop)
        states.append(state)
        assert len(rest) == len(everything[stop:])
        for i, (got, want) in enumerate(zip(rest, everything[stop:])):
            assert same(got, want), f"stopped after {stop} steps ({state}): step {stop + i} differs"
    # the cuts covered a schedule-epoch boundary and (for finite members) a member pass boundary
    assert any(state["steps"] == STEPS for state in states)
    if make is not windows_member:
        per_pass = 4 if make is map_member else 5
        assert any(state["member_batches"] == per_pass for state in states)
        assert max(state["member_pass"] for state in states) >= 1


def test_member_passes_are_reshuffled_and_a_function_of_the_seed_and_pass():
    loader = map_member()
    batches = [b for b in steps_of(loader, 40) if b is not None]
    passes = [torch.cat(batches[i : i + 4])[:, 0].tolist() for i in (0, 4, 8)]
    assert all(sorted(p) == [float(i) for i in range(10)] for p in passes)
    assert passes[0] != passes[1]  # a new order each member pass
    torch.manual_seed(123)  # the global random state does not matter
    again = [b for b in steps_of(map_member(), 40) if b is not None]
    assert all(torch.equal(a, b) for a, b in zip(batches, again))


def test_a_resumable_member_skips_without_loading_what_was_served():
    loader = map_member()
    steps_of(loader, 10)
    fresh = map_member()
    fresh.load_state_dict(loader.state_dict())
    assert isinstance(fresh.loader, ResumableLoader)
    rest = [b for b in steps_of(fresh, STEPS * EPOCHS - 10) if b is not None]
    assert fresh.loader.dataset.dataset.reads == sum(len(b) for b in rest)  # only what it yields


def test_state_round_trips_before_iteration_and_bad_states_are_named():
    loader = map_member()
    state = {"epoch": 2, "steps": 3, "member_pass": 1, "member_batches": 2}
    loader.load_state_dict(state)
    assert loader.state_dict() == state  # saved again before training resumed: nothing is lost
    assert map_member().state_dict() == {"epoch": 0, "steps": 0, "member_pass": 0, "member_batches": 0}
    with pytest.raises(ValueError, match=r"task 'noisy'.*lacks steps, member_pass, member_batches"):
        loader.load_state_dict({"epoch": 0, "batches": 3})  # a ResumableLoader's state
    with pytest.raises(ValueError, match=r"task 'noisy': bad loader state.*steps=-1"):
        loader.load_state_dict({**state, "steps": -1})


def text_module(tmp_path: Path) -> TextDataModule:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to be or not to be, that is the question. " * 20, encoding="utf-8")
    data = TextDataModule(str(corpus), tokenizer="char", block_size=8, batch_size=2, seed=1)
    data.setup("fit")
    return data


def fake_trainer(global_step: int) -> SimpleNamespace:
    return SimpleNamespace(
        global_step=global_step,
        accumulate_grad_batches=1,
        global_rank=0,
        world_size=1,
        current_epoch=0,
        overfit_batches=0,
    )


class LoaderModule(L.LightningDataModule):
    """A member data module around a ready training loader."""

    def __init__(self, loader: DataLoader) -> None:
        super().__init__()
        self.loader = loader

    def train_dataloader(self) -> DataLoader:
        return self.loader


def test_sampled_members_start_at_their_own_batch_zero_and_map_style_ones_are_resumable(tmp_path):
    image = LoaderModule(DataLoader(NoisyItems(), batch_size=3, shuffle=True))
    data = MultiTaskDataModule({"lm": text_module(tmp_path), "noisy": image}, sampling="uniform", seed=4)
    data.trainer = fake_trainer(global_step=9)
    for member in data.members.values():
        member.trainer = data.trainer
    sampled = data.train_dataloader()
    lm, noisy = sampled.iterables["lm"].loader, sampled.iterables["noisy"].loader
    assert lm.dataset.start == 0  # not trainer.global_step: the LM got only some of the steps
    assert data.members["lm"].trainer is data.trainer
    assert isinstance(noisy, ResumableLoader) and noisy.sampler.seed == 4
    # single-task LM training (and sampling=all, where the LM trains every step) starts where the
    # checkpoint's loader state says: Lightning hands it to the loader, the trainer's step is not read
    single = data.members["lm"].train_dataloader()
    single.load_state_dict({"batches": 9})
    next(iter(single))
    assert single.dataset.start == 9
    every = MultiTaskDataModule(dict(data.members), sampling="all", seed=4)
    every.trainer = data.trainer
    combined = every.train_dataloader()
    combined.iterables["lm"].load_state_dict({"batches": 9})
    next(iter(combined.iterables["lm"]))
    assert combined.iterables["lm"].dataset.start == 9
    assert isinstance(combined.iterables["noisy"], ResumableLoader)


# -- end to end -----------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    ("every", "crash_step", "resumed_from", "extra"),
    [
        pytest.param(4, 10, 8, [], id="mid-epoch"),
        pytest.param(5, 11, 10, [], id="end-of-epoch"),
        pytest.param(4, 10, 8, ["task.balance=grad_norm"], id="grad-norm-balance"),
        pytest.param(4, 10, 8, ["task.balance=member_moments"], id="member-moments"),
    ],
)
def test_multitask_resume_repeats_the_uninterrupted_losses(tmp_path, every, crash_step, resumed_from, extra):
    # 5 steps per schedule epoch (LM 1, MNIST 3, audio 1 of them): step 8 is 3 steps into epoch 1,
    # with the LM 2 batches in, MNIST one batch into its second pass and the audio member halfway
    # through its pass; step 10 is epoch 1's end. With the gradient balance,
    # the members' running gradient norms (which scale each loss) resume too; with member_moments,
    # every member's own optimizer state.
    args = [*MULTITASK_RESUMABLE, f"callbacks.checkpoint.every_n_train_steps={every}", *extra]
    full, first, resumed = interrupted_and_resumed(tmp_path, args, crash_step)
    assert sorted(full) == list(range(1, 15))
    assert_same_curve(full, first, resumed, resumed_from)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    positions = state["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert [p["steps"] for p in positions] == [4, 4, 4]  # step 14: 4 steps into epoch 2
