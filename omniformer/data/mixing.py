"""Mixing tasks step by step: each member's share of an epoch, and the seeded order of its steps.

``sampling=proportional | uniform | weights`` gives member ``i`` a share ``p_i`` of every epoch's steps:
proportional to the members' training batches per epoch (examples-proportional mixing, Raffel et al.
2020, T5), equal, or proportional to ``weights``. :class:`TaskSchedule` turns the shares into exact
step counts (largest remainder) in a seeded random order per epoch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from omniformer.seeding import stream_seed

SAMPLING = ("proportional", "uniform", "weights", "all")


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
            generator = torch.Generator().manual_seed(stream_seed(self.seed, epoch))
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
