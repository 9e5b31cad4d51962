"""Language-model windows: endless seeded training batches, and every position once for validation."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from omniformer.seeding import stream_seed


class RandomWindows(IterableDataset):
    """Endless batches of random ``(x, y)`` windows from a 1-D id array, ``block_size`` long.

    Batch ``i`` depends only on ``(seed, i)``, so a run resumed at batch ``i`` sees exactly the
    batches the uninterrupted run would have (:class:`WindowLoader` keeps that position).
    ``stride`` shards the batch indices between processes (rank ``r`` of ``world`` starts at
    ``start·world + r`` with stride ``world``, so ranks never see the same batch); with several
    loader workers, each takes every ``workers``-th of its indices and the loader interleaves them
    back in order.
    """

    def __init__(
        self, ids: np.ndarray, block_size: int, batch_size: int, seed: int, start: int = 0, stride: int = 1
    ):
        if len(ids) < block_size + 2:
            raise ValueError(
                f"the training split has {len(ids)} tokens, too few for data.block_size={block_size}"
            )
        self.ids, self.block_size, self.batch_size = ids, block_size, batch_size
        self.seed, self.start, self.stride = seed, start, stride

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``index``-th batch: inputs and next-token targets, each ``batch_size×block_size``."""
        ids = torch.from_numpy(self.ids)
        generator = torch.Generator().manual_seed(stream_seed(self.seed, index))
        starts = torch.randint(len(ids) - self.block_size - 1, (self.batch_size,), generator=generator)
        windows = ids[starts[:, None] + torch.arange(self.block_size + 1)].long()
        return windows[:, :-1], windows[:, 1:]

    def __iter__(self):
        info = get_worker_info()
        workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        step, stride = self.start + worker * self.stride, self.stride * workers
        while True:
            yield self.batch(step)
            step += stride


class ContiguousWindows(Dataset):
    """Every position of a split exactly once: non-overlapping windows of ``block_size`` targets."""

    def __init__(self, ids: np.ndarray, block_size: int):
        if len(ids) < 2:
            raise ValueError(
                "the validation split has fewer than 2 tokens; lower data.val_fraction's denominator"
            )
        self.ids, self.block_size = ids, block_size

    def __len__(self) -> int:
        return -(-(len(self.ids) - 1) // self.block_size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        # The last window is shifted back to full length (it overlaps its neighbour) so batches
        # stay rectangular; its extra targets are counted twice, a negligible bias.
        start = min(index * self.block_size, max(len(self.ids) - self.block_size - 1, 0))
        window = torch.from_numpy(np.asarray(self.ids[start : start + self.block_size + 1])).long()
        return window[:-1], window[1:]


class WindowLoader(DataLoader):
    """The endless training loader over :class:`RandomWindows`, resumable: its state is the position.

    ``state_dict()`` is ``{"batches": n}``, the batches of this process trained on, and after
    ``load_state_dict`` the next iteration starts at batch ``n`` (global window batch
    ``n · world + rank``), so the step to start from arrives as state, as Lightning restores it from a
    checkpoint. Every iteration starts at the restored position (0 until one is loaded).

    Lightning's fit loop draws one batch ahead of training from a loader without a length
    (``lightning/pytorch/loops/fetchers.py``, ``_PrefetchDataFetcher``), so when a checkpoint is
    written the newest batch drawn has not been trained on: it is not counted.

    Args:
        windows: the dataset of window batches.
        rank: this process's rank.
        world: number of processes; ranks take interleaved window batches.
        num_workers: loader worker processes.
        pin_memory: page-locked batches for faster host→GPU copies.
    """

    def __init__(
        self, windows: RandomWindows, rank: int = 0, world: int = 1, num_workers: int = 0, pin_memory=False
    ) -> None:
        super().__init__(windows, batch_size=None, num_workers=num_workers, pin_memory=pin_memory)
        self.rank, self.world = rank, world
        self.start = 0  # batches of this process to begin at (a restored position)
        self._begun: int | None = None  # where the current iteration began
        self._drawn = 0  # batches the current iteration has handed out

    def __iter__(self):
        # A generator: Lightning may create the iterator before it loads a checkpoint's loader state,
        # so the position is read when the first batch is drawn.
        self._begun, self._drawn = self.start, 0
        self.dataset.start, self.dataset.stride = self.start * self.world + self.rank, self.world
        for batch in super().__iter__():
            self._drawn += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        if self._begun is None:
            return {"batches": int(self.start)}
        return {"batches": int(self._begun + max(self._drawn - 1, 0))}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Start the next iteration at ``state["batches"]`` (from :meth:`state_dict`).

        Raises:
            ValueError: ``state`` is not such a position.
        """
        batches = state.get("batches") if isinstance(state, dict) else None
        if not isinstance(batches, int) or batches < 0:
            raise ValueError(
                f"the checkpoint's language-model loader state {state!r} is not {{'batches': n >= 0}}; "
                "was it written by another data setup?"
            )
        self.start, self._begun = batches, None
