"""Exact resume: an interrupted-and-resumed run repeats the uninterrupted run's per-step losses.

Runs are in-process (``omniformer.train.run``, the same code path as the CLI) on tiny configs; a
crash is an exception raised at the start of a step, after the last checkpoint and before the next
(what is on disk is what a SIGKILL would leave; tests/test_crash_safety.py kills real processes).
Dropout and random augmentations are on, so the RNG handling is exercised too.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from omniformer.resume import ResumableLoader, ResumableSampler, resumable_loader
from omniformer.train import resolve_ckpt_path, run
from tests.helpers.callbacks import assert_same_curve, interrupted_and_resumed
from tests.helpers.data import image_folder
from tests.helpers.overrides import LM, image_args
from tests.helpers.runs import copy_run


@pytest.mark.slow
def test_language_model_resume_repeats_the_uninterrupted_losses(tmp_path):
    full, first, resumed = interrupted_and_resumed(tmp_path, LM, crash_step=7)
    # last.ckpt was written at step 6 (every 3 steps); steps 7.. are recomputed after the resume.
    assert_same_curve(full, first, resumed, resumed_from=6)
    assert sorted(full) == list(range(1, 13))
    # The CSV log keeps the history up to the checkpoint, once, and continues after it.
    with open(tmp_path / "run" / "logs" / "metrics.csv") as handle:
        steps = [int(row["step"]) for row in csv.DictReader(handle) if row["train_loss"]]
    assert steps == list(range(12))
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["resumed_at_step"] == 6 and results["steps"] == 12


@pytest.mark.slow
@pytest.mark.parametrize(
    ("every", "crash_step", "resumed_from"),
    [(3, 7, 6), (5, 7, 5)],
    ids=["mid-epoch", "end-of-epoch"],
)
def test_image_classification_resume_restores_the_sampler_position(tmp_path, every, crash_step, resumed_from):
    # 5 batches per epoch: a checkpoint at step 6 is one batch into epoch 1; at step 5, epoch 0's end.
    args = [
        *image_args(image_folder(tmp_path / "images")),
        f"callbacks.checkpoint.every_n_train_steps={every}",
    ]
    full, first, resumed = interrupted_and_resumed(tmp_path, args, crash_step)
    assert sorted(full) == list(range(1, 16))
    assert_same_curve(full, first, resumed, resumed_from)


# -- the loader itself ------------------------------------------------------------------------------
class NoisyItems(Dataset):
    """Item i is ``i`` plus torch, ``random`` and NumPy noise (a stand-in for random augmentation)."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int):
        import random

        return torch.tensor([float(index), torch.rand(()).item(), random.random(), float(np.random.rand())])


def test_loader_order_and_augmentation_depend_only_on_seed_epoch_and_index():
    def batches(workers: int, epoch: int = 0):
        base = DataLoader(NoisyItems(), batch_size=3, shuffle=True, num_workers=workers)
        loader = resumable_loader(base, seed=7)
        loader.sampler.set_epoch(epoch)
        return [b for b in loader]

    single, workers = batches(0), batches(2)
    assert isinstance(
        resumable_loader(DataLoader(NoisyItems(), batch_size=3, shuffle=True), 7), ResumableLoader
    )
    assert all(torch.equal(a, b) for a, b in zip(single, workers)) and len(single) == 4
    assert sorted(torch.cat(single)[:, 0].int().tolist()) == list(range(10))  # a permutation
    assert not torch.equal(torch.cat(single), torch.cat(batches(0, epoch=1)))  # a new order per epoch


def test_loader_state_skips_exactly_the_trained_batches():
    reference = resumable_loader(DataLoader(NoisyItems(), batch_size=3, shuffle=True), seed=7)
    reference.sampler.set_epoch(2)
    everything = list(reference)
    loader = resumable_loader(DataLoader(NoisyItems(), batch_size=3, shuffle=True), seed=7)
    loader.sampler.set_epoch(2)
    it = iter(loader)
    next(it), next(it)
    state = loader.state_dict()
    assert state == {"epoch": 2, "batches": 2, "cycle": 0}
    fresh = resumable_loader(DataLoader(NoisyItems(), batch_size=3, shuffle=True), seed=7)
    fresh.load_state_dict(state)
    fresh.sampler.set_epoch(2)  # Lightning sets the epoch again: the restored position is kept
    rest = list(fresh)
    assert len(rest) == 2 and all(torch.equal(a, b) for a, b in zip(rest, everything[2:]))
    assert fresh.state_dict() == {"epoch": 2, "batches": 4, "cycle": 0}
    done = resumable_loader(DataLoader(NoisyItems(), batch_size=3, shuffle=True), seed=7)
    done.load_state_dict({"epoch": 2, "batches": 4})  # written after the epoch's last batch
    assert done.sampler.epoch == 3 and done.sampler.skip == 0


def test_two_ranks_split_the_single_process_order_like_distributed_sampler():
    dataset = NoisyItems()
    one = ResumableSampler(dataset, torch.utils.data.RandomSampler(dataset), seed=3)
    ranks = [ResumableSampler(dataset, None, seed=3, num_replicas=2, rank=r) for r in (0, 1)]
    for sampler in (one, *ranks):
        sampler.shuffle = True
    order = [i for i, _ in one]
    assert [i for i, _ in ranks[0]] == order[0::2] and [i for i, _ in ranks[1]] == order[1::2]
    reference = DistributedSampler(dataset, num_replicas=2, rank=1, shuffle=True, seed=3)
    assert [i for i, _ in ranks[1]] == list(reference)
    # a sample gets the same seed on whichever rank loads it
    seeds = dict(one)
    assert all(seeds[i] == s for r in ranks for i, s in r)


def test_ckpt_path_last_and_auto(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"resume needs hydra\.run\.dir"):
        resolve_ckpt_path("last", tmp_path)
    assert resolve_ckpt_path("auto", tmp_path) is None  # first launch of a requeued job: fresh start
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert resolve_ckpt_path("auto", tmp_path) == str(tmp_path / "checkpoints" / "last.ckpt")
    assert resolve_ckpt_path(None, tmp_path) is None


@pytest.mark.slow
def test_resume_refuses_other_data_and_warns_about_changed_settings(tiny_lm_run, tmp_path, caplog):
    args = [*LM, "trainer.max_steps=3"]  # as tiny_lm_run was trained
    copy_run(tiny_lm_run, tmp_path)
    with pytest.raises(ValueError, match=r"was trained with a different vocab\.json than this data produces"):
        run([*args, "data.vocab_size=280", "ckpt_path=last"], tmp_path)
    with caplog.at_level("WARNING", logger="omniformer"):
        run([*args, "optim.lr=0.002", "ckpt_path=last"], tmp_path)
    assert "optim.lr: 0.001 → 0.002" in caplog.text and "will not repeat the uninterrupted one" in caplog.text


@pytest.mark.slow  # resumes a tiny run for 2 steps (about 1 s)
def test_a_checkpoint_from_before_named_parameter_groups_resumes_under_the_names(tiny_lm_run, tmp_path):
    """Checkpoints written before the optimizer's parameter groups had names (no "name" key) still
    resume: their optimizer state loads, and the groups keep their names (lr-AdamW/decay, not pg1)."""
    copy_run(tiny_lm_run, tmp_path)
    last = tmp_path / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    groups = saved["optimizer_states"][0]["param_groups"]
    assert [group.pop("name") for group in groups] == ["decay", "no_decay"]
    torch.save(saved, last)
    run([*LM, "trainer.max_steps=5", "ckpt_path=last"], tmp_path)
    resumed = torch.load(last, weights_only=True)["optimizer_states"][0]
    assert [group["name"] for group in resumed["param_groups"]] == ["decay", "no_decay"]
    assert {float(state["step"]) for state in resumed["state"].values()} == {5.0}  # 3 loaded + 2 more
    with (tmp_path / "logs" / "metrics.csv").open(newline="") as handle:
        header = next(csv.reader(handle))
    assert sorted(c for c in header if c.startswith("lr-")) == ["lr-AdamW/decay", "lr-AdamW/no_decay"]


def test_seeded_batches_equal_seeded_items_and_keep_the_main_stream():
    """``__getitems__`` (one save/restore per batch) loads what ``__getitem__`` loads, and loading
    in the main process leaves the caller's torch / random / NumPy streams where they were."""
    import random

    import numpy as np
    import torch

    from omniformer.resume import SeededDataset

    class Noisy(torch.utils.data.Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return torch.rand(2) + i, random.random(), float(np.random.rand())

    data = SeededDataset(Noisy())
    keys = [(3, 11), (7, 12), (3, 11)]
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    expected = (torch.rand(1), random.random(), np.random.rand())
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    batch = data.__getitems__(keys)
    single = [data[k] for k in keys]
    assert (torch.rand(1), random.random(), np.random.rand()) == expected
    for got, want in zip(batch, single):
        assert torch.equal(got[0], want[0]) and got[1:] == want[1:]
    assert torch.equal(batch[0][0], batch[2][0]) and not torch.equal(batch[0][0], batch[1][0] - 4)


def test_a_loader_iterated_again_within_an_epoch_starts_a_new_pass_and_resumes_in_it():
    """CombinedLoader's max_size_cycle re-iterates a shorter loader without set_epoch: each pass
    gets its own order and sample seeds (not the same batches and augmentations again), passes are
    a function of (seed, epoch, pass), set_epoch starts over, and the pass is part of the state."""
    import torch
    from torch.utils.data import DataLoader, Dataset

    from omniformer.resume import resumable_loader

    class Noisy(Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return torch.tensor([float(i), torch.rand(()).item()])

    def passes(loader, count):
        return [torch.cat(list(loader)) for _ in range(count)]

    make = lambda: resumable_loader(DataLoader(Noisy(), batch_size=2, shuffle=True), seed=3)
    first, second, third = passes(make(), 3)
    assert not torch.equal(first, second) and not torch.equal(second, third)
    assert sorted(first[:, 0].tolist()) == sorted(second[:, 0].tolist())  # each pass sees every item once
    again = passes(make(), 3)
    assert all(torch.equal(a, b) for a, b in zip(again, [first, second, third]))

    loader = make()
    list(loader), list(loader)
    loader.sampler.set_epoch(1)
    epoch_one = torch.cat(list(loader))
    fresh = make()
    fresh.sampler.set_epoch(1)
    assert torch.equal(epoch_one, torch.cat(list(fresh)))

    # Stop one batch into the second pass; a fresh loader given that state continues identically.
    loader = make()
    list(loader)
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    assert state["cycle"] == 1 and state["batches"] == 1
    rest = torch.cat(list(it))
    resumed = make()
    resumed.load_state_dict(state)
    assert torch.equal(torch.cat(list(resumed)), rest)
    assert torch.equal(torch.cat([second[:2], rest]), second)
