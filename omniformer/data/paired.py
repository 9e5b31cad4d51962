"""What every paired data module shares: (media, text) splits, a char vocabulary, ``spec()``, the loaders.

A paired data module feeds a prefix LM (:class:`omniformer.tasks.PrefixLMTask`): each item is a
``(media, text)`` pair, media being a 1-D waveform at ``sample_rate`` (``modality="audio"``) or a
``C×H×W`` float image in [0, 1] (``modality="image"``; widths may vary), or what a plug-in modality's
``reader`` (:class:`~omniformer.data.media_readers.MediaReader`) reads and pads. A subclass only says where
the pairs come from, by overriding :meth:`PairedDataModule.make_splits`::

    class DigitStrings(PairedDataModule):
        def make_splits(self) -> dict[str, Dataset]:
            return {"train": ..., "val": ..., "test": ...}  # datasets of (media_tensor, text)

Everything else is here: the character vocabulary (every character of every split, plus an
end-of-text id one past them, carried in checkpoints as ``vocab.json``), how media are read (carried
as ``media.json``, :mod:`omniformer.prefix_files`), the batch format
(:class:`~omniformer.data.paired_batch.PairedBatch`) and the loaders, the training one resumable
mid-epoch (:func:`omniformer.resume.training_loader`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from omniformer.data.media_readers import MediaReader, builtin_reader
from omniformer.data.paired_batch import PairCollate
from omniformer.data.split_loaders import SplitLoaders
from omniformer.prefix_files import MEDIA_FILE, MediaReading
from omniformer.tokenizers.vocab import CharVocab, Vocabulary, vocab_from_json

VOCAB_FILE = "vocab.json"
SPLITS = ("train", "val", "test")


def dataset_texts(dataset: Dataset) -> list[str]:
    """Every text of a ``(media, text)`` dataset: its ``texts`` attribute when it has one (no media
    read), else each item's text."""
    texts = getattr(dataset, "texts", None)
    if texts is not None:
        return list(texts() if callable(texts) else texts)
    return [dataset[i][1] for i in range(len(dataset))]  # type: ignore[arg-type]


class PairedDataModule(SplitLoaders, L.LightningDataModule):
    """(media, text) pairs in train, validation and test splits, batched for a prefix LM.

    Args:
        modality: ``audio`` or ``image``, what the media are (or give ``reader``).
        sample_rate: the rate audio items are at (audio; the tokenizer is built for it).
        in_channels: channels of image items (1 grayscale, 3 RGB).
        patch_size: the image tokenizer's patch side; images are padded to a width divisible by it.
        batch_size: training pairs per batch.
        eval_batch_size: pairs per validation / test batch (default: ``batch_size``).
        num_workers: loader worker processes.
        datasets: the splits themselves (``{"train": ..., "val": ..., "test": ...}``), for a module
            built around ready datasets instead of a subclass's :meth:`make_splits`.
        reader: how the media are padded and sized (a
            :class:`~omniformer.data.media_readers.MediaReader`); default: the built-in reader of
            ``modality`` from ``sample_rate`` / ``in_channels`` / ``patch_size``. Its ``modality``
            is the data's.
    """

    def __init__(
        self,
        *,
        modality: str | None = None,
        sample_rate: int | None = None,
        in_channels: int = 1,
        patch_size: int = 4,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        datasets: Mapping[str, Dataset] | None = None,
        reader: MediaReader | None = None,
    ) -> None:
        super().__init__()
        if reader is None:
            reader = builtin_reader(
                str(modality), sample_rate=sample_rate, channels=in_channels, patch_size=patch_size
            )
        elif modality is not None and modality != reader.modality:
            raise ValueError(f"data.modality={modality!r}, but data.reader reads {reader.modality!r}")
        if batch_size < 1 or (eval_batch_size is not None and eval_batch_size < 1):
            raise ValueError(
                f"data.batch_size={batch_size}, data.eval_batch_size={eval_batch_size}: must be >= 1"
            )
        self.reader, self.modality, self.sample_rate = reader, reader.modality, sample_rate
        self.in_channels, self.patch_size = in_channels, patch_size
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers = num_workers
        self._given = dict(datasets) if datasets is not None else None
        self.vocab: Vocabulary | None = None
        self.splits: dict[str, Dataset] | None = None
        self.max_text_len = 0
        self.media_spec: dict[str, Any] = {}

    # -- what subclasses provide ------------------------------------------------------------------
    def make_splits(self) -> dict[str, Dataset]:
        """The ``train``, ``val`` and ``test`` datasets of ``(media, text)`` pairs."""
        if self._given is None:
            raise NotImplementedError(
                f"{type(self).__name__} must override make_splits() or be given datasets="
            )
        return self._given

    # -- shared -----------------------------------------------------------------------------------
    @property
    def eos_id(self) -> int:
        """The end-of-text id: one past the vocabulary's characters."""
        return self._vocab().size

    def setup(self, stage: str | None = None) -> None:
        """Make the splits; build the vocabulary from every split's texts (unless a checkpoint gave
        one, which must then cover them)."""
        if self.splits is not None:
            return
        splits = self.make_splits()
        missing = [s for s in SPLITS if s not in splits]
        if missing:
            raise ValueError(f"{type(self).__name__}.make_splits() gave no {', '.join(missing)} split")
        texts = {split: dataset_texts(splits[split]) for split in SPLITS}
        corpus = "".join(t for split in SPLITS for t in texts[split])
        if self.vocab is None:
            self.vocab = CharVocab.train(corpus)
        else:
            known = set(self.vocab.decode(range(self.vocab.size)))
            for split in SPLITS:
                for text in texts[split]:
                    unknown = sorted(set(text) - known)
                    if unknown:
                        raise ValueError(
                            f"the {split} text {text!r} has characters {unknown} that are not in the "
                            "checkpoint's vocabulary"
                        )
        self.max_text_len = max(len(t) for split in SPLITS for t in texts[split]) + 1  # + end of text
        self.media_spec = self.reader.spec(splits["train"][0][0])
        self.splits = dict(splits)
        sizes = " / ".join(f"{len(splits[s])} {s}" for s in SPLITS)
        rank_zero_info(
            f"paired {self.modality} → text: {sizes} pairs, {self.vocab.size} characters + end of text, "
            f"texts of at most {self.max_text_len - 1} characters"
        )

    @property
    def image_height(self) -> int | None:
        """The images' height, once ``setup`` has seen them (``None`` before, and for other media)."""
        return self.media_spec.get("image_size") if self.modality == "image" else None

    def _vocab(self) -> Vocabulary:
        if self.vocab is None:
            raise RuntimeError(
                f"{type(self).__name__}: the vocabulary comes from the data: call setup() first"
            )
        return self.vocab

    def spec(self) -> dict[str, Any]:
        """What the model is built from: ``modality``, ``vocab_size`` (characters + end of text),
        ``eos_id``, ``max_text_len`` (ids, end of text included), and the reader's sizes:
        ``sample_rate``, or ``in_channels``, ``image_size`` and ``patch_size``."""
        if self.splits is None:
            raise RuntimeError(f"{type(self).__name__}.spec() needs setup() first")
        spec: dict[str, Any] = {
            "modality": self.modality,
            "vocab_size": self._vocab().size + 1,
            "eos_id": self.eos_id,
            "max_text_len": self.max_text_len,
        }
        return {**spec, **self.media_spec}

    def media_reading(self) -> MediaReading:
        """How this module reads media, for reading a user's files the same way at generation time:
        the audio rate, or the image channels, height (known after ``setup``) and patch width."""
        if self.modality == "audio":
            return MediaReading("audio", sample_rate=self.sample_rate)
        return MediaReading(
            "image", channels=self.in_channels, height=self.image_height, patch_size=self.patch_size
        )

    def artifacts(self) -> dict[str, str]:
        """``vocab.json``: the character vocabulary (the end-of-text id is its size); ``media.json``:
        how media are read (:meth:`media_reading`; for images once ``setup`` knows their height), so
        that generation from the checkpoint reads files as training did, without the dataset."""
        out = {VOCAB_FILE: self._vocab().to_json()}
        if self.modality == "audio" or (self.modality == "image" and self.image_height is not None):
            out[MEDIA_FILE] = self.media_reading().to_json()
        return out

    def use_artifacts(self, artifacts: Mapping[str, str]) -> None:
        """Take back the vocabulary a checkpoint was trained with (before ``setup``)."""
        if VOCAB_FILE in artifacts:
            self.vocab = vocab_from_json(artifacts[VOCAB_FILE])

    def collate(self) -> PairCollate:
        """The collate function of every loader."""
        return PairCollate(vocab=self._vocab(), eos_id=self.eos_id, pad=self.reader.pad)

    def loader(self, split: str, train: bool) -> DataLoader:
        """The ``DataLoader`` of ``split``: shuffled batches of ``batch_size`` when ``train``."""
        if self.splits is None:
            raise RuntimeError(f"no {split} split: call setup() first")
        return DataLoader(
            self.splits[split],
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            num_workers=self.num_workers,
            collate_fn=self.collate(),
            pin_memory=torch.cuda.is_available(),
        )
