"""The user's own (media, text) pairs from JSONL / CSV manifests (``data=paired``).

    omniformer-train task=prefix_lm data=paired data.train=train.jsonl data.val=val.jsonl
    omniformer-train task=prefix_lm prefix=image data=paired data.manifest=all.csv

Rows are ``{"audio": "a.wav", "text": "..."}`` or ``{"image": "b.png", "text": "..."}``, paths
relative to the manifest's folder (:mod:`omniformer.data.manifest`). Splits come from the
``train`` / ``val`` / ``test`` manifests; a split without its own manifest is held out of the
training rows (or of the one ``manifest``) by ``val_fraction`` / ``test_fraction``, seeded by
``split_seed``, whole media files at a time so that no file is in two splits. Audio is read with
``soundfile`` and resampled to ``sample_rate``; images with the image readers, as ``channels``-channel
floats in [0, 1], all of one height (``image_height`` resizes them, keeping the aspect ratio).

Another modality is read by the :class:`~omniformer.data.media_readers.MediaReader` given as
``reader`` (a ``_target_`` under ``data.reader``): its ``modality`` is the manifest's media column
(``{"video": "clips/a.npy", "text": "..."}``) and its ``read`` loads each file.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor
from torch.utils.data import Dataset

from omniformer.data.locations import data_location
from omniformer.data.manifest import MEDIA_COLUMNS, ManifestRow, read_manifest
from omniformer.data.media_readers import MediaReader, builtin_reader
from omniformer.data.paired import PairedDataModule


def read_media(row: ManifestRow, reader: MediaReader) -> Tensor:
    """The media of ``row`` read by ``reader``; one error naming the row if the file is unreadable."""
    try:
        return reader.read(row.path)
    except (OSError, ValueError) as err:
        raise ValueError(f"{row.where}: cannot read {row.modality} file {row.path}: {err}") from None


class ManifestPairs(Dataset):
    """``(media, text)`` items of checked manifest rows (media read by ``reader`` when an item is)."""

    def __init__(self, rows: Sequence[ManifestRow], reader: MediaReader):
        self.rows, self.reader = list(rows), reader

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[Tensor, str]:
        row = self.rows[index]
        return read_media(row, self.reader), row.text

    @property
    def texts(self) -> list[str]:
        """Every item's text, without reading media."""
        return [row.text for row in self.rows]


def hold_out_files(
    rows: list[ManifestRow], fractions: dict[str, float], seed: int
) -> dict[str, list[ManifestRow]]:
    """``rows`` split into ``train`` and the held-out ``fractions`` of their distinct media files
    (each at least one file), seeded; every row of one file lands in one split."""
    files = sorted({row.path for row in rows})
    counts = {split: max(1, round(len(files) * f)) for split, f in fractions.items() if f > 0}
    if len(files) - sum(counts.values()) < 1:
        raise ValueError(
            f"{len(files)} media file(s) are too few to hold out {counts} file(s) and keep some to train on"
        )
    random.Random(seed).shuffle(files)
    where, start = {}, 0
    for split, count in counts.items():
        where.update((f, split) for f in files[start : start + count])
        start += count
    splits: dict[str, list[ManifestRow]] = {"train": [], **{s: [] for s in counts}}
    for row in rows:
        splits[where.get(row.path, "train")].append(row)
    return splits


class PairedManifestDataModule(PairedDataModule):
    """Pairs from JSONL / CSV manifests (see the module docstring).

    Args:
        train: the training manifest (or give ``manifest``).
        val: the validation manifest; ``None`` holds ``val_fraction`` of the training files out.
        test: the test manifest; ``None`` holds ``test_fraction`` of the training files out.
        manifest: one manifest split by the fractions (instead of ``train``).
        val_fraction: share of the files held out for validation when there is no ``val`` manifest.
        test_fraction: share held out for testing when there is no ``test`` manifest.
        split_seed: seed of those hold-outs (fixed: the split does not change with the run's seed).
        sample_rate: audio is resampled to this rate.
        channels: image channels (1 grayscale, 3 RGB).
        image_height: resize images to this height (aspect kept); ``None`` = all must share one height.
        patch_size: the image tokenizer's patch side (images are padded to a multiple of it).
        batch_size: training pairs per batch.
        eval_batch_size: pairs per validation / test batch (default: ``batch_size``).
        num_workers: loader worker processes.
        reader: how another modality's files are read (a
            :class:`~omniformer.data.media_readers.MediaReader`); its ``modality`` is the manifests'
            media column. Default: audio or image, from the rows, read with the options above.
        root: the data folder relative manifest paths are read under (``None``: as given).
    """

    def __init__(
        self,
        *,
        train: str | None = None,
        val: str | None = None,
        test: str | None = None,
        manifest: str | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        sample_rate: int = 16000,
        channels: int = 1,
        image_height: int | None = None,
        patch_size: int = 4,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        reader: MediaReader | None = None,
        root: str | None = None,
    ) -> None:
        train, val, test, manifest = (
            None if m is None else str(data_location(root, m)) for m in (train, val, test, manifest)
        )
        if (train is None) == (manifest is None):
            raise ValueError(
                f"data.train={train!r}, data.manifest={manifest!r}: give the training manifest (data.train=, "
                "with optional data.val= and data.test=) or one data.manifest= to split, not both"
            )
        if manifest is not None and (val is not None or test is not None):
            raise ValueError(
                "data.manifest= is split by data.val_fraction / data.test_fraction; drop data.val / data.test"
            )
        for key, value, given in (("val", val_fraction, val), ("test", test_fraction, test)):
            if given is None and not 0 < value < 1:
                raise ValueError(f"data.{key}_fraction={value}: without data.{key}= it must lie in (0, 1)")
        self.manifests = {"train": train or manifest, "val": val, "test": test}
        self.fractions = {"val": val_fraction, "test": test_fraction}
        self.split_seed = split_seed
        self.columns = MEDIA_COLUMNS if reader is None else (reader.modality,)
        self._rows: dict[str, list[ManifestRow]] | None = None
        modality = self.rows_modality()  # every manifest read and checked here, before any training
        if reader is None:
            reader = builtin_reader(
                modality,
                sample_rate=sample_rate,
                channels=channels,
                image_height=image_height,
                patch_size=patch_size,
            )
        super().__init__(
            reader=reader,
            sample_rate=sample_rate,
            in_channels=channels,
            patch_size=patch_size,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
        )

    def rows(self) -> dict[str, list[ManifestRow]]:
        """Every split's checked rows (manifests read once)."""
        if self._rows is None:
            read = {
                split: read_manifest(path, self.columns)
                for split, path in self.manifests.items()
                if path is not None
            }
            held = {split: f for split, f in self.fractions.items() if split not in read}
            self._rows = {**hold_out_files(read.pop("train"), held, self.split_seed), **read}
            check_disjoint(self._rows)
        return self._rows

    def rows_modality(self) -> str:
        """The one modality of every row (an error naming the first row of another)."""
        rows = [row for split in self.rows().values() for row in split]
        for row in rows:
            if row.modality != rows[0].modality:
                raise ValueError(
                    f"{row.where}: a {row.modality} row, but {rows[0].where} is {rows[0].modality}; "
                    "one run reads one modality"
                )
        return rows[0].modality

    def make_splits(self) -> dict[str, Dataset]:
        """One :class:`ManifestPairs` per split."""
        return {split: ManifestPairs(rows, self.reader) for split, rows in self.rows().items()}


def check_disjoint(splits: dict[str, list[ManifestRow]]) -> None:
    """One error when a media file is in two splits, naming both rows."""
    seen: dict[Path, tuple[str, ManifestRow]] = {}
    for split in ("train", "val", "test"):
        for row in splits.get(split, []):
            first_split, first = seen.setdefault(row.path, (split, row))
            if first_split != split:
                raise ValueError(
                    f"{row.where}: {row.path} ({split}) is also in {first.where} ({first_split}); a file in "
                    "two splits leaks evaluation data into training"
                )
