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


class RandomImageBatches(IterableDataset):
    """Endless ``(images, labels)`` batches from a pool of ``pool`` pre-drawn random batches.

    Drawing 150 MB of Gaussian pixels per step would make the host, not the model, the bottleneck,
    so a few batches are drawn once and cycled (batch ``i`` is pool entry ``i mod pool``).
    """

    def __init__(
        self, channels: int, image_size: int, num_classes: int, batch_size: int, seed: int = 0, pool: int = 4
    ) -> None:
        if min(channels, image_size, num_classes, batch_size, pool) < 1:
            raise ValueError("channels, image_size, num_classes, batch_size and pool must be >= 1")
        generator = torch.Generator().manual_seed(seed)
        self.pool = [
            (
                torch.randn(batch_size, channels, image_size, image_size, generator=generator),
                torch.randint(num_classes, (batch_size,), generator=generator),
            )
            for _ in range(pool)
        ]

    def __iter__(self):
        index = 0
        while True:
            yield self.pool[index % len(self.pool)]
            index += 1


class RandomImageDataModule(L.LightningDataModule):
    """Classification batches of random normalised images: ImageNet's shape without ImageNet.

    Args:
        image_size: side of the square images (224 for ViT-B/16 at ImageNet resolution).
        patch_size: the tokenizer's patch side, reported in ``spec()`` (16: 14×14 = 196 patches).
        channels: image channels.
        num_classes: label range (1000, ImageNet-1k's head).
        batch_size: images per batch.
        seed: seed of the pool of batches.
        pool: distinct batches drawn (and cycled).
        pin_memory: page-locked batches (``None``: when CUDA is available).
    """

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 16,
        channels: int = 3,
        num_classes: int = 1000,
        batch_size: int = 128,
        seed: int = 0,
        pool: int = 4,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"data.patch_size={patch_size} must divide data.image_size={image_size}")
        self.image_size, self.patch_size, self.channels = image_size, patch_size, channels
        self.num_classes, self.batch_size, self.seed, self.pool = num_classes, batch_size, seed, pool
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self._batches: RandomImageBatches | None = None

    def setup(self, stage: str | None = None) -> None:
        if self._batches is None:
            self._batches = RandomImageBatches(
                self.channels, self.image_size, self.num_classes, self.batch_size, self.seed, self.pool
            )

    def spec(self) -> dict:
        """What an image task is built from (the keys of ``ImageDataModule.spec``)."""
        return {
            "num_classes": self.num_classes,
            "in_channels": self.channels,
            "image_size": [self.image_size, self.image_size],
            "patch_size": [self.patch_size, self.patch_size],
            "class_names": [f"class_{i}" for i in range(self.num_classes)],
        }

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(self._batches, batch_size=None, pin_memory=self.pin_memory)


class RandomAudioBatches(IterableDataset):
    """Endless ``(waveforms, lengths, labels)`` batches from a pool of pre-drawn random clips.

    Every clip is full length (``lengths`` = samples per clip), the shape of fixed-length keyword
    spotting; the log-mel front end inside the model does the same work for noise as for speech.
    """

    def __init__(self, samples: int, num_classes: int, batch_size: int, seed: int = 0, pool: int = 4) -> None:
        if min(samples, num_classes, batch_size, pool) < 1:
            raise ValueError("samples, num_classes, batch_size and pool must be >= 1")
        generator = torch.Generator().manual_seed(seed)
        lengths = torch.full((batch_size,), samples, dtype=torch.long)
        self.pool = [
            (
                0.1 * torch.randn(batch_size, samples, generator=generator),
                lengths,
                torch.randint(num_classes, (batch_size,), generator=generator),
            )
            for _ in range(pool)
        ]

    def __iter__(self):
        index = 0
        while True:
            yield self.pool[index % len(self.pool)]
            index += 1


class RandomAudioDataModule(L.LightningDataModule):
    """Audio-classification batches of random 1-second clips: Speech Commands' shape, no download.

    Args:
        sample_rate: samples per second (16 kHz, Speech Commands).
        seconds: clip length.
        num_classes: label range (35 words in Speech Commands v2).
        batch_size: clips per batch.
        seed: seed of the pool of batches.
        pool: distinct batches drawn (and cycled).
        pin_memory: page-locked batches (``None``: when CUDA is available).
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        seconds: float = 1.0,
        num_classes: int = 35,
        batch_size: int = 256,
        seed: int = 0,
        pool: int = 4,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__()
        if sample_rate < 1 or seconds <= 0:
            raise ValueError(
                f"data.sample_rate and data.seconds must be positive, got {sample_rate}, {seconds}"
            )
        self.sample_rate, self.samples = sample_rate, round(sample_rate * seconds)
        self.num_classes, self.batch_size, self.seed, self.pool = num_classes, batch_size, seed, pool
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self._batches: RandomAudioBatches | None = None

    def setup(self, stage: str | None = None) -> None:
        if self._batches is None:
            self._batches = RandomAudioBatches(
                self.samples, self.num_classes, self.batch_size, self.seed, self.pool
            )

    def spec(self) -> dict:
        """What an audio task is built from (the keys of the audio data modules' ``spec``)."""
        return {
            "num_classes": self.num_classes,
            "class_names": [f"class_{i}" for i in range(self.num_classes)],
            "sample_rate": self.sample_rate,
        }

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(self._batches, batch_size=None, pin_memory=self.pin_memory)
