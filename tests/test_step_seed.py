"""StepSeed: every training step's randomness depends only on (seed, rank, batch), and seeding it
costs little (no lazily queued CUDA seeding on a machine that trains on the CPU)."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from omniformer.callbacks import StepSeed
from omniformer.resume import mix_seed


def step_seed_draws(batch: int, seed: int = 7, device: str = "cpu") -> tuple:
    """What a training step draws after ``StepSeed`` ran for batch ``batch``: dropout, random, NumPy."""
    trainer = SimpleNamespace(global_rank=0, fit_loop=SimpleNamespace(total_batch_idx=batch))
    StepSeed(seed).on_train_batch_start(trainer, SimpleNamespace(device=torch.device(device)), None, batch)
    mask = nn.functional.dropout(torch.ones(64), 0.5, training=True)
    return mask, random.random(), float(np.random.rand())


def test_step_seed_gives_the_same_randomness_for_the_same_seed_and_step():
    first = step_seed_draws(5)
    torch.rand(100)  # whatever ran in between
    random.random()
    np.random.rand(3)
    again = step_seed_draws(5)
    assert torch.equal(first[0], again[0]) and first[1:] == again[1:]
    other = step_seed_draws(6)
    assert not torch.equal(first[0], other[0]) and first[1] != other[1] and first[2] != other[2]
    assert not torch.equal(first[0], step_seed_draws(5, seed=8)[0])


def test_step_seed_draws_what_torch_manual_seed_drew():
    # the same numbers as before it stopped calling torch.manual_seed: old checkpoints resume alike
    fast = step_seed_draws(3)
    seed = mix_seed(7, 0, 3)
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    assert torch.equal(fast[0], nn.functional.dropout(torch.ones(64), 0.5, training=True))
    assert fast[1:] == (random.random(), float(np.random.rand()))


@pytest.fixture
def cuda_seeding_queue(monkeypatch):
    """Torch's queue of CUDA seedings to run once CUDA initialises (``torch.manual_seed`` adds one,
    with a stack trace, whenever CUDA is not initialised yet), empty for this test."""
    if torch.cuda.is_initialized():
        pytest.skip("CUDA is initialised in this process: seedings run at once, none are queued")
    monkeypatch.setattr(torch.cuda, "_lazy_seed_tracker", torch.cuda._LazySeedTracker())

    def queued() -> list[str]:
        """The stack trace (one string) of each queued seeding."""
        return ["".join(stack) for _, stack in filter(None, torch.cuda._lazy_seed_tracker.get_calls())]

    return queued


def test_on_the_cpu_step_seed_queues_no_cuda_seeding_and_leaves_cuda_alone(cuda_seeding_queue):
    step_seed_draws(4)
    step_seed_draws(4, device="cuda")  # a CUDA device before CUDA is initialised: nothing to seed yet
    assert cuda_seeding_queue() == [] and not torch.cuda.is_initialized()
    torch.manual_seed(4)  # what StepSeed avoids: a queued seeding (and its stack trace) per step
    assert len(cuda_seeding_queue()) == 1


def test_other_accelerators_are_seeded_through_torch_manual_seed(cuda_seeding_queue):
    """MPS, XPU, ...: StepSeed calls ``torch.manual_seed``, which seeds every backend torch knows
    (on this machine that shows as the CUDA seeding it queues from StepSeed) and the CPU."""
    draws = step_seed_draws(4, device="mps")
    (queued,) = cuda_seeding_queue()
    assert "seed_step" in queued and "torch.manual_seed(seed)" in queued
    assert torch.initial_seed() == mix_seed(7, 0, 4)
    assert torch.equal(draws[0], step_seed_draws(4)[0])  # the same draws as on the CPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_once_cuda_is_initialised_step_seed_seeds_every_cuda_generator():
    torch.cuda.init()
    step_seed_draws(4, device="cuda")
    drawn = torch.rand(16, device="cuda")
    torch.cuda.manual_seed_all(mix_seed(7, 0, 4))
    assert torch.equal(drawn, torch.rand(16, device="cuda"))
    step_seed_draws(5, device="cuda")
    assert not torch.equal(drawn, torch.rand(16, device="cuda"))
