"""MNIST digit strings: 1-5 real handwritten MNIST digits side by side, with their transcript.

A string of ``n`` digits is an image 28 px high and about ``28·n`` px wide (plus a random gap, or
overlap, between neighbours when configured), and its text ("3 0 7"): a real-image stand-in for
reading a line of handwriting. Test strings are made only of MNIST's test images (the ``t10k``
files); training and validation strings of its training images, validation from a seeded held-out
set of them, so no image is ever in two splits. Each string is a pure function of
``(seed, split, index)``, so loader workers agree and a resumed run sees exactly the same items.
"""

from __future__ import annotations

import gzip
import math
import random
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from omniformer.data.idx import check_idx
from omniformer.data.splits import split_indices
from omniformer.seeding import mix_seed

SPLITS = ("train", "val", "test")
#: Strings per split when ``size`` is not given.
DEFAULT_SIZES = {"train": 20000, "val": 500, "test": 1000}
#: torchvision's MNIST normalisation, as :class:`omniformer.data.image_datasets.MNISTDataModule` uses.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
DIGIT_SIZE = 28
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
TextForm = Literal["digits", "words"]
#: The words :mod:`omniformer.data.digit_utterances` speaks (not imported: it loads torchaudio).
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class StringPlan:
    """What a digit string is made of: the indices of its MNIST images (in the split's source set),
    their labels, and the horizontal offset (gap if positive, overlap if negative) between
    neighbours, in pixels."""

    images: tuple[int, ...]
    digits: tuple[int, ...]
    gaps: tuple[int, ...]

    @property
    def width(self) -> int:
        """The image's width in pixels."""
        return DIGIT_SIZE * len(self.images) + sum(self.gaps)


def read_idx(path: Path) -> np.ndarray:
    """An uncompressed or gzipped uint8 IDX file as an array of its header's shape; one error naming
    the file if it is not IDX or its size disagrees with its header."""
    if path.suffix != ".gz":
        shape = check_idx(path)
        return np.fromfile(path, dtype=np.uint8, offset=4 + 4 * len(shape)).reshape(shape)
    with gzip.open(path, "rb") as handle:
        try:
            data = handle.read()
        except (OSError, EOFError) as err:
            raise ValueError(
                f"{path}: not a readable gzip file ({err}); delete it and download again"
            ) from None
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or data[3] == 0:
        raise ValueError(f"{path}: not a uint8 IDX file (magic bytes {data[:4].hex() or 'missing'})")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim]) if len(data) >= 4 + 4 * ndim else None
    if shape is None or len(data) != 4 + 4 * ndim + math.prod(shape):
        raise ValueError(
            f"{path}: its size ({len(data)} bytes unpacked) disagrees with its IDX header; delete it and "
            "download again"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def read_mnist(root: str | Path, part: str) -> tuple[Tensor, Tensor]:
    """MNIST's ``"train"`` or ``"test"`` (t10k) images (N×28×28 uint8) and labels (N, int64), from
    torchvision's raw layout ``<root>/MNIST/raw/*-ubyte`` (or ``*-ubyte.gz``).

    Raises:
        FileNotFoundError: a file is missing, naming the folder and the files it lacks.
        ValueError: a file is corrupt, or images and labels disagree (naming the file).
    """
    folder = Path(root).expanduser() / "MNIST" / "raw"
    paths = []
    for name in MNIST_FILES[part]:
        found = [folder / n for n in (name, name + ".gz") if (folder / n).is_file()]
        if not found:
            raise FileNotFoundError(
                f"data.root: MNIST file {name} (or {name}.gz) is missing from {folder}; point data.root at "
                "the folder holding MNIST/raw/ (torchvision's layout)"
            )
        paths.append(found[0])
    images, labels = (read_idx(path) for path in paths)
    if images.ndim != 3 or images.shape[1:] != (DIGIT_SIZE, DIGIT_SIZE):
        raise ValueError(f"{paths[0]}: images are {images.shape}, expected N×28×28")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{paths[1]}: {labels.shape} labels for {len(images)} images in {paths[0]}")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


class MNISTDigitStrings(Dataset):
    """Strings of 1-5 real MNIST digits side by side: items ``(image, text)``.

    ``image`` is a float32 ``1×28×W`` tensor, pixels in ``[0, 1]`` with a black (0) background, so a
    batch padded with zeros is padded with background (``normalize=True`` applies MNIST's mean and
    std instead, as omniformer's MNIST module does). ``text`` is the digits, ``"3 0 7"``, or words
    (``"three zero seven"``). Item ``index`` is a pure function of ``(seed, split, index)``: ``n``
    uniform in ``[min_digits, max_digits]``, ``n`` images drawn uniformly from the split's pool, and
    between neighbours an offset uniform in ``gap_px`` (negative overlaps; overlapping pixels take
    the brighter value).

    Args:
        root: the folder holding ``MNIST/raw/`` (torchvision's layout).
        split: ``"train"``, ``"val"`` or ``"test"``.
        size: strings in the split (default: 20000 train, 500 val, 1000 test).
        seed: seed of the strings.
        min_digits: fewest digits in a string.
        max_digits: most digits in a string.
        gap_px: ``(smallest, largest)`` offset between neighbouring digits, in pixels (``-14..28``).
        text_form: ``"digits"`` or ``"words"``.
        normalize: subtract MNIST's mean and divide by its std instead of keeping ``[0, 1]``.
        val_size: training images held out for validation strings: a count or a fraction.
        split_seed: seed of that hold-out (fixed, so validation does not change with ``seed``).
    """

    def __init__(
        self,
        *,
        root: str | Path,
        split: str,
        size: int | None = None,
        seed: int = 0,
        min_digits: int = 1,
        max_digits: int = 5,
        gap_px: tuple[int, int] = (0, 0),
        text_form: TextForm = "digits",
        normalize: bool = False,
        val_size: float | int = 5000,
        split_seed: int = 0,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split={split!r}; choose one of {', '.join(SPLITS)}")
        if not 1 <= min_digits <= max_digits:
            raise ValueError(
                f"data.min_digits={min_digits}, data.max_digits={max_digits}: need 1 <= min <= max"
            )
        low, high = (int(v) for v in gap_px)
        if not -DIGIT_SIZE // 2 <= low <= high <= DIGIT_SIZE:
            raise ValueError(f"data.gap_px={list(gap_px)}: need -14 <= smallest <= largest <= 28")
        if text_form not in ("digits", "words"):
            raise ValueError(f"data.text_form={text_form!r}; choose 'digits' or 'words'")
        size = DEFAULT_SIZES[split] if size is None else int(size)
        if size < 1:
            raise ValueError(f"size of the {split} split must be >= 1, got {size}")
        self.root, self.split, self.size, self.seed = Path(root).expanduser(), split, size, seed
        self.min_digits, self.max_digits, self.gap_px = min_digits, max_digits, (low, high)
        self.text_form, self.normalize = text_form, normalize
        self.images, self.labels = read_mnist(self.root, "test" if split == "test" else "train")
        if split == "test":
            self.pool = list(range(len(self.labels)))
        else:
            train, val = split_indices(len(self.labels), val_size, split_seed)
            self.pool = train if split == "train" else val

    def __len__(self) -> int:
        return self.size

    def plan(self, index: int) -> StringPlan:
        """The images, digits and offsets of string ``index`` (without composing it)."""
        if not 0 <= index < self.size:
            raise IndexError(f"string {index} out of range for the {self.split} split of {self.size}")
        rng = random.Random(mix_seed(self.seed, SPLITS.index(self.split), index))
        count = rng.randint(self.min_digits, self.max_digits)
        images = tuple(rng.choice(self.pool) for _ in range(count))
        gaps = tuple(rng.randint(*self.gap_px) for _ in range(count - 1))
        return StringPlan(images, tuple(int(self.labels[i]) for i in images), gaps)

    def text(self, digits: tuple[int, ...]) -> str:
        """The transcript of ``digits`` in this dataset's ``text_form``."""
        return " ".join(DIGIT_WORDS[d] if self.text_form == "words" else str(d) for d in digits)

    def texts(self) -> list[str]:
        """Every string's transcript, in index order, without composing any image."""
        return [self.text(self.plan(index).digits) for index in range(self.size)]

    def __getitem__(self, index: int) -> tuple[Tensor, str]:
        plan = self.plan(index)
        canvas = torch.zeros(DIGIT_SIZE, plan.width, dtype=torch.uint8)
        left = 0
        for position, image in enumerate(plan.images):
            window = canvas[:, left : left + DIGIT_SIZE]
            torch.maximum(window, self.images[image], out=window)
            left += DIGIT_SIZE + (plan.gaps[position] if position < len(plan.gaps) else 0)
        pixels = canvas.unsqueeze(0).float() / 255.0
        if self.normalize:
            pixels = (pixels - MNIST_MEAN) / MNIST_STD
        return pixels, self.text(plan.digits)
