"""Moving-MNIST-style clips built from real MNIST digits: a digit moving and bouncing in the frame.

Moving MNIST (Srivastava et al. 2015, "Unsupervised Learning of Video Representations using
LSTMs") moves MNIST digits with a constant velocity inside a 64×64 frame, reflecting them off the
edges. Here each clip holds one digit and its label is that digit, so the task is video
classification: the model has to find a 28×28 digit wherever it is in the frame and whatever
frame it looks at.

Digits are read with ``torchvision.datasets.MNIST(root, download=False)`` from the raw IDX files.
Training clips use training digits (minus a held-out validation set) with a fresh random
trajectory every time they are read (augmentation); validation and test clips (test clips use the
MNIST test digits) have fixed trajectories seeded by their index, so the evaluation never changes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from omniformer.resume import training_loader
from omniformer.seeding import stream_seed

DIGIT = 28
CLASSES = [str(d) for d in range(10)]


def trajectory(frames: int, size: int, generator: torch.Generator | None) -> list[tuple[int, int]]:
    """Top-left corners of a digit moving in a straight line and bouncing off the frame's edges.

    The start is uniform over the frame, the direction uniform, the speed 2-5 pixels per frame;
    when a step would leave the frame the position is reflected and that velocity component flips.
    """
    span = size - DIGIT
    x, y = (torch.rand(2, generator=generator) * span).tolist()
    angle = float(torch.rand((), generator=generator)) * 2 * math.pi
    speed = 2.0 + 3.0 * float(torch.rand((), generator=generator))
    vx, vy = speed * math.cos(angle), speed * math.sin(angle)
    corners = []
    for _ in range(frames):
        corners.append((round(y), round(x)))
        x, vx = _bounce(x + vx, vx, span)
        y, vy = _bounce(y + vy, vy, span)
    return corners


def _bounce(position: float, velocity: float, span: float) -> tuple[float, float]:
    """Reflect ``position`` back into ``[0, span]`` (as often as a fast step needs), flipping velocity."""
    if span <= 0:
        return 0.0, velocity
    while not 0 <= position <= span:
        position = -position if position < 0 else 2 * span - position
        velocity = -velocity
    return position, velocity


class MovingDigits(Dataset):
    """Clips ``frames×1×size×size`` (normalised floats) of one bouncing digit, and the digit as label.

    Args:
        digits: ``N×28×28`` uint8 MNIST images.
        labels: their labels.
        frames: frames per clip.
        size: frame side in pixels (>= 28).
        seed: ``None`` = a new random trajectory at every read (training; the global torch RNG,
            which omniformer seeds per sample); an int = the trajectory of item ``i`` is fixed by
            ``(seed, i)`` (validation, test).
        mean: pixel mean subtracted after scaling to [0, 1].
        std: pixel std divided by.
    """

    def __init__(
        self,
        digits: Tensor,
        labels: Tensor,
        frames: int,
        size: int,
        seed: int | None,
        mean: float,
        std: float,
    ) -> None:
        self.digits, self.labels, self.frames, self.size = digits, labels, frames, size
        self.seed, self.mean, self.std = seed, mean, std

    def __len__(self) -> int:
        return len(self.digits)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        generator = (
            None if self.seed is None else torch.Generator().manual_seed(stream_seed(self.seed, index))
        )
        digit = self.digits[index].float() / 255.0
        clip = torch.zeros(self.frames, 1, self.size, self.size)
        for t, (row, col) in enumerate(trajectory(self.frames, self.size, generator)):
            clip[t, 0, row : row + DIGIT, col : col + DIGIT] = digit
        return (clip - self.mean) / self.std, int(self.labels[index])


class MovingMNISTDataModule(L.LightningDataModule):
    """Moving-MNIST-style video classification built on the fly from MNIST's raw IDX files.

    Args:
        root: folder holding ``MNIST/raw`` (torchvision's layout).
        frames: frames per clip.
        image_size: frame side in pixels (64 as in Moving MNIST; >= 28).
        train_clips: training clips per epoch (each a distinct training digit; at most 60,000 minus
            ``val_clips``).
        val_clips: validation clips (held-out training digits).
        test_clips: test clips (MNIST test digits).
        batch_size: clips per training batch.
        eval_batch_size: clips per validation / test batch (default: ``batch_size``).
        split_seed: seed of the digit split and of the fixed evaluation trajectories.
        num_workers: loader worker processes (drawing a clip is cheap: 0 is fine for small runs).
    """

    def __init__(
        self,
        root: str,
        frames: int = 8,
        image_size: int = 64,
        train_clips: int = 10000,
        val_clips: int = 1000,
        test_clips: int = 1000,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        split_seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if image_size < DIGIT:
            raise ValueError(f"data.image_size={image_size} must be at least {DIGIT} (an MNIST digit)")
        if frames < 1 or batch_size < 1 or min(train_clips, val_clips, test_clips) < 1:
            raise ValueError(
                "data.frames, data.batch_size, data.train_clips, data.val_clips and data.test_clips "
                "must be >= 1"
            )
        self.root, self.frames, self.image_size = root, frames, image_size
        self.train_clips, self.val_clips, self.test_clips = train_clips, val_clips, test_clips
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.split_seed, self.num_workers = split_seed, num_workers
        # A 28×28 digit (MNIST mean 0.1307, std 0.3081 over its pixels) in a size×size black frame.
        area = (DIGIT / image_size) ** 2
        self.mean = 0.1307 * area
        self.std = math.sqrt(area * (0.3081**2 + 0.1307**2) - self.mean**2)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def _mnist(self, train: bool):
        from torchvision.datasets import MNIST

        try:
            return MNIST(self.root, train=train, download=False)
        except RuntimeError as err:
            raise FileNotFoundError(
                f"data.root={self.root!r}: MNIST's raw IDX files were not found under {self.root}/MNIST/raw "
                f"({err})"
            ) from None

    def setup(self, stage: str | None = None) -> None:
        """Read the MNIST digits and split them into training, validation and test clips."""
        if self.train_set is not None:
            return
        train, test = self._mnist(True), self._mnist(False)
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.split_seed))
        if self.val_clips >= len(train):
            raise ValueError(
                f"data.val_clips={self.val_clips} leaves no training digits (MNIST has {len(train)})"
            )
        val_idx, train_idx = order[: self.val_clips], order[self.val_clips :][: self.train_clips]
        test_idx = torch.arange(min(self.test_clips, len(test)))

        def clips(source, index: Tensor, seed: int | None) -> MovingDigits:
            return MovingDigits(
                source.data[index],
                source.targets[index],
                self.frames,
                self.image_size,
                seed,
                self.mean,
                self.std,
            )

        self.train_set = clips(train, train_idx, None)
        self.val_set = clips(train, val_idx, self.split_seed + 1)
        self.test_set = clips(test, test_idx, self.split_seed + 2)
        rank_zero_info(
            f"moving MNIST: {len(self.train_set)} train / {len(self.val_set)} val / "
            f"{len(self.test_set)} test clips of {self.frames}×{self.image_size}×{self.image_size}"
        )

    def spec(self) -> dict:
        """Sizes the model is built from: classes, channels, frames and frame size."""
        return {
            "num_classes": len(CLASSES),
            "class_names": list(CLASSES),
            "in_channels": 1,
            "frames": self.frames,
            "image_size": self.image_size,
        }

    def artifacts(self) -> dict[str, str]:
        """``classes.json`` (the digits in label order)."""
        return {"classes.json": json.dumps(CLASSES)}

    def use_artifacts(self, artifacts: Mapping[str, str]) -> None:
        """Nothing to take back: the classes are the ten digits."""

    def _loader(self, dataset: Dataset | None, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("call setup() first")
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        # Through omniformer's helper, so a run resumed from a mid-epoch checkpoint sees the batches
        # (order and trajectories) the uninterrupted run saw.
        return training_loader(self, self._loader(self.train_set, True))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False)
