"""MNIST digit strings paired with their transcripts, for a prefix LM (``data=digit_strings``).

    omniformer-train experiment=read_digits data.root=../shared/data

The pairs are :class:`~omniformer.data.digit_strings.MNISTDigitStrings` (1-5 real MNIST digits side
by side, "3 0 7"; test strings only from MNIST's t10k images); batching, padding of the variable
widths, the checkpoint's vocabulary and exact resume are
:class:`~omniformer.data.paired.PairedDataModule`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from torch.utils.data import Dataset

from omniformer.data.digit_strings import MNIST_MEAN, MNIST_STD, MNISTDigitStrings, TextForm
from omniformer.data.digit_vocab import digit_vocab
from omniformer.data.image import default_data_root
from omniformer.data.paired import PairedDataModule
from omniformer.prefix_files import MediaReading


class DigitStringsDataModule(PairedDataModule):
    """Train / val / test splits of MNIST digit strings and their transcripts (image → text).

    Training strings are drawn with ``seed`` (the run's); validation and test strings with
    ``split_seed``, fixed, so they are the same items whatever the training seed.

    Args:
        root: the folder holding ``MNIST/raw/`` (torchvision's layout); ``None`` =
            ``$OMNIFORMER_DATA`` or ``~/.cache/omniformer/data``.
        train_size: training strings (composed on the fly; an epoch is this many).
        val_size: validation strings.
        test_size: test strings.
        seed: seed of the training strings (the run's seed).
        min_digits: fewest digits in a string.
        max_digits: most digits in a string.
        gap_px: ``[smallest, largest]`` offset between neighbouring digits in pixels (negative overlaps).
        text_form: ``digits`` ("3 0 7") or ``words`` ("three zero seven").
        normalize: MNIST's mean and std instead of pixels in [0, 1] (padding is then not background).
        val_images: MNIST training images held out for validation strings: a count or a fraction.
        split_seed: seed of that hold-out and of the val / test strings (fixed: they never change
            with ``seed``).
        patch_size: the image tokenizer's patch side (divides 28; widths are padded to a multiple).
        batch_size: training pairs per batch.
        eval_batch_size: pairs per validation / test batch (default: ``batch_size``).
        num_workers: loader worker processes.
    """

    def __init__(
        self,
        *,
        root: str | None = None,
        train_size: int = 20000,
        val_size: int = 500,
        test_size: int = 1000,
        seed: int = 0,
        min_digits: int = 1,
        max_digits: int = 5,
        gap_px: Sequence[int] = (0, 0),
        text_form: TextForm = "digits",
        normalize: bool = False,
        val_images: float | int = 5000,
        split_seed: int = 0,
        patch_size: int = 7,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__(
            modality="image",
            in_channels=1,
            patch_size=patch_size,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
        )
        self.vocab = digit_vocab(text_form)
        self.root = default_data_root() if root is None else root
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.seeds = {"train": seed, "val": split_seed, "test": split_seed}
        self.options = {
            "min_digits": min_digits,
            "max_digits": max_digits,
            "gap_px": tuple(gap_px),
            "text_form": text_form,
            "normalize": normalize,
            "val_size": val_images,
            "split_seed": split_seed,
        }

    def media_reading(self) -> MediaReading:
        """The paired reading, plus MNIST's mean and std when the strings are normalised."""
        reading = super().media_reading()
        if self.options["normalize"]:
            reading = replace(reading, mean=MNIST_MEAN, std=MNIST_STD)
        return reading

    def make_splits(self) -> dict[str, Dataset]:
        """The three :class:`MNISTDigitStrings` splits."""
        return {
            split: MNISTDigitStrings(
                root=self.root, split=split, size=size, seed=self.seeds[split], **self.options
            )
            for split, size in self.sizes.items()
        }
