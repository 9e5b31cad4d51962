"""Synthetic data modules for speed measurements: the shapes of real data, none of its preparation.

Throughput does not depend on what the numbers are, only on their shapes, so GPU runs use these to
measure the model and the loop without training a tokenizer or reading a dataset first (a GPU
minute is too dear to spend on that). They follow the data-module contract of ``docs/EXTENDING.md``
(``spec()``, ``(inputs, targets)`` batches), sample on the host, pin batches in page-locked
memory when a GPU is present so ``Trainer``'s ``non_blocking`` copies really overlap compute, and
make batch ``i`` a pure function of ``(seed, i)`` like ``RandomWindows``.
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset


class RandomTokenBatches(IterableDataset):
    """Endless ``(inputs, targets)`` batches of uniformly random token ids, ``batch_size×block_size``."""

    def __init__(self, vocab_size: int, block_size: int, batch_size: int, seed: int = 0) -> None:
        if min(vocab_size, block_size, batch_size) < 1:
            raise ValueError(
                f"vocab_size, block_size and batch_size must be >= 1, got {vocab_size}, {block_size}, "
                f"{batch_size}"
            )
        self.vocab_size, self.block_size, self.batch_size, self.seed = (
            vocab_size,
            block_size,
            batch_size,
            seed,
        )

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``index``-th batch: ids and next-token targets."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        ids = torch.randint(self.vocab_size, (self.batch_size, self.block_size + 1), generator=generator)
        return ids[:, :-1], ids[:, 1:]

    def __iter__(self):
        index = 0
        while True:
            yield self.batch(index)
            index += 1


class RandomTokenDataModule(L.LightningDataModule):
    """Language-modelling batches of random ids: GPT-2's vocabulary shape without a tokenizer.

    Args:
        vocab_size: ids drawn from ``[0, vocab_size)``; 50304 is GPT-2's 50257 padded to a multiple
            of 64 (friendlier matmul shapes, as in nanoGPT).
        block_size: tokens per sequence.
        batch_size: sequences per batch.
        seed: seed of the sampler.
        pin_memory: page-locked batches (``None``: when CUDA is available).
    """

    def __init__(
        self,
        vocab_size: int = 50304,
        block_size: int = 1024,
        batch_size: int = 16,
        seed: int = 0,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__()
        self.vocab_size, self.block_size, self.batch_size, self.seed = (
            vocab_size,
            block_size,
            batch_size,
            seed,
        )
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory

    def spec(self) -> dict:
        """Sizes the model is built from: the vocabulary size."""
        return {"vocab_size": self.vocab_size}

    def train_dataloader(self) -> DataLoader:
        batches = RandomTokenBatches(self.vocab_size, self.block_size, self.batch_size, self.seed)
        return DataLoader(batches, batch_size=None, pin_memory=self.pin_memory)
