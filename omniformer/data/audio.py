"""Audio classification data: clips as ``(path, label)`` splits, cropped, padded and batched.

Clips are read with ``soundfile``, mixed to mono and resampled to the model's ``sample_rate``
(:mod:`omniformer.data.audio_files`). Features are *not* computed here: the model's tokenizer
computes log-mel on the accelerator. Batches are either

* ``variable``: each batch padded with zeros to its longest clip, ``(waveforms, lengths, labels)``;
  the tokenizer turns ``lengths`` into a key-padding mask. With ``bucket_by_length`` training
  batches group clips of similar length, so little compute goes into padding; or
* ``fixed``: every clip cropped or zero-padded to ``max_seconds``, ``(waveforms, labels)``, for
  fixed shapes (the model sees the padding as silence).

Three sources: the Free Spoken Digit Dataset in its own layout and torchaudio's ``SPEECHCOMMANDS``
with its official validation/test lists (:mod:`omniformer.data.audio_datasets`), and a folder with
one sub-folder per class (:mod:`omniformer.data.audio_folder`).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from omniformer.data.audio_cache import ClipCache, describe_cache
from omniformer.data.audio_files import audio_frames, read_audio
from omniformer.data.classification import ClassificationDataModule
from omniformer.data.collate import PadCollate
from omniformer.seeding import stream_seed

log = logging.getLogger("omniformer")

BatchingKind = Literal["variable", "fixed"]
Item = tuple[Path, int]


# ---------------------------------------------------------------------------------------------- batching
class AudioClips(Dataset):
    """Labelled clips read on access: ``(waveform, label)`` with the waveform at ``sample_rate``.

    Args:
        items: ``(path, label)`` pairs.
        sample_rate: rate every clip is resampled to.
        max_samples: clips longer than this are cropped (``None`` = keep whole clips).
        random_crop: crop at a random offset (training) instead of keeping the beginning.
        cache: decoded clips kept in memory (:class:`~omniformer.data.audio_cache.ClipCache`, at
            ``sample_rate``); ``None`` decodes every clip at every access.
    """

    def __init__(
        self,
        items: Sequence[Item],
        sample_rate: int,
        max_samples: int | None,
        random_crop: bool = False,
        cache: ClipCache | None = None,
    ) -> None:
        self.items, self.sample_rate = list(items), sample_rate
        self.max_samples, self.random_crop, self.cache = max_samples, random_crop, cache

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.items[index]
        waveform = self.cache.read(path) if self.cache is not None else read_audio(path, self.sample_rate)[0]
        if self.max_samples is not None and len(waveform) > self.max_samples:
            extra = len(waveform) - self.max_samples
            start = int(torch.randint(extra + 1, ())) if self.random_crop else 0
            waveform = waveform[start : start + self.max_samples]
        return waveform, label


class LengthBucketSampler(Sampler[int]):
    """Shuffled indices in which each run of ``batch_size`` has clips of similar length.

    Indices are shuffled, cut into pools of ``pool_batches`` batches, sorted by length within a pool,
    cut into batches, and the batches shuffled ("sortish" sampling): batches stay random from epoch
    to epoch while a padded batch wastes little compute on zeros. Deterministic per (seed, epoch).
    A plain index sampler, so a distributed run can still swap in its own sampler.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, pool_batches: int = 50):
        self.lengths, self.batch_size = list(lengths), batch_size
        self.seed, self.pool = seed, batch_size * pool_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` (Lightning calls this at each epoch start)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        rng = random.Random(stream_seed(self.seed, self.epoch))
        self.epoch += 1  # a fresh order next time, even without set_epoch
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        batches = []
        for start in range(0, len(order), self.pool):
            pool = sorted(order[start : start + self.pool], key=self.lengths.__getitem__)
            batches += [pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        rng.shuffle(batches)
        return iter([index for batch in batches for index in batch])


# ---------------------------------------------------------------------------------------------- modules
class AudioClassificationDataModule(ClassificationDataModule):
    """Shared machinery of the audio data modules: splits of ``(path, label)``, loaders, artifacts.

    Subclasses implement :meth:`find_splits`. ``classes.json`` keeps non-ASCII class names as they
    are (it always did; a resume compares the file's text). Args common to all of them:

    Args:
        root: the dataset's folder.
        sample_rate: rate the model reads; every clip is resampled to it.
        batching: ``"variable"`` (pad to the longest clip, with ``lengths``) or ``"fixed"`` (pad or
            crop every clip to ``max_seconds``).
        max_seconds: crop longer clips (training: random offset; evaluation: the beginning). Required
            for ``fixed`` batching; ``None`` keeps whole clips with ``variable`` batching.
        batch_size: clips per batch.
        bucket_by_length: group training clips of similar length into batches (``variable`` only).
        num_workers: loader worker processes (reading a short clip is cheap; 0 is often fastest).
        seed: seed of the bucketing sampler and of random splits.
        skip_corrupt: read every clip once at setup and skip (and count) unreadable, truncated or
            empty ones instead of stopping at the first with an error that names it.
        cache_mb: megabytes of decoded, resampled clips kept in memory per loader process, so each
            clip is decoded once (:mod:`omniformer.data.audio_cache`); 0 decodes at every access.
    """

    ascii_classes = False

    def __init__(
        self,
        root: str,
        sample_rate: int = 16000,
        batching: BatchingKind = "variable",
        max_seconds: float | None = None,
        batch_size: int = 64,
        bucket_by_length: bool = True,
        num_workers: int = 0,
        seed: int = 0,
        skip_corrupt: bool = False,
        cache_mb: float = 1024.0,
    ) -> None:
        super().__init__()
        if cache_mb < 0:
            raise ValueError(f"data.cache_mb must be >= 0 (0 turns the cache off), got {cache_mb}")
        if sample_rate <= 0:
            raise ValueError(f"data.sample_rate must be positive, got {sample_rate}")
        if batching not in ("variable", "fixed"):
            raise ValueError(f"data.batching={batching!r}; choose 'variable' or 'fixed'")
        if max_seconds is not None and max_seconds <= 0:
            raise ValueError(f"data.max_seconds must be positive (or null), got {max_seconds}")
        if batching == "fixed" and max_seconds is None:
            raise ValueError("data.batching=fixed pads every clip to data.max_seconds; set data.max_seconds")
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        self.root = Path(root).expanduser() if root is not None else None
        self.sample_rate, self.batching, self.max_seconds = int(sample_rate), batching, max_seconds
        self.batch_size, self.bucket_by_length = batch_size, bucket_by_length
        self.num_workers, self.seed, self.skip_corrupt = num_workers, seed, skip_corrupt
        self.cache_mb = cache_mb
        self.cache: ClipCache | None = None
        self.skipped: list[str] = []
        self.splits: dict[str, list[Item]] = {}
        self._frame_cache: dict[Path, int] = {}

    # -- what subclasses provide
    def find_splits(self) -> tuple[list[str], dict[str, list[tuple[Path, str]]]]:
        """Class names (sorted) and ``split name → [(path, class name)]`` for train / val / test."""
        raise NotImplementedError

    # -- Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        classes, named = self.find_splits()
        if self.classes is not None:  # a checkpoint's (use_artifacts): its label order wins
            unknown = sorted(set(classes) - set(self.classes))
            if unknown:
                raise ValueError(
                    f"{self.root}: classes {unknown} are not among the {len(self.classes)} "
                    "classes the checkpoint was trained on"
                )
            classes = self.classes
        if len(classes) < 2:
            raise ValueError(
                f"{self.root}: found {len(classes)} class(es) {classes}; a classifier needs >= 2"
            )
        self.classes = list(classes)
        index = {name: i for i, name in enumerate(self.classes)}
        self.splits = {split: [(path, index[name]) for path, name in items] for split, items in named.items()}
        if self.skip_corrupt:
            self._drop_unreadable()
        for split in ("train", "val"):
            if not self.splits.get(split):
                raise ValueError(f"{self.root}: the {split} split is empty")
        log.info(
            "audio data %s: %s clips, %d classes, %d Hz",
            self.root.resolve(),
            {k: len(v) for k, v in self.splits.items()},
            len(self.classes),
            self.sample_rate,
        )
        self._start_cache()

    def _start_cache(self) -> None:
        """The decoded-clip cache at the model's rate (after a checkpoint may have changed it); log
        how large the decoded clips are against ``cache_mb``."""
        self.cache = ClipCache(self.sample_rate, self.cache_mb) if self.cache_mb > 0 else None
        paths = [path for items in self.splits.values() for path, _ in items]
        total = sum(self._frames_or_zero(path) for path in paths) if self.cache_mb > 0 else 0
        log.info(describe_cache(self.cache_mb, total, len(paths), self.sample_rate))

    def _frames_or_zero(self, path: Path) -> int:
        """Samples of a clip from its header, 0 for a broken one (named when it is first read)."""
        try:
            return self._frames(path)
        except ValueError:
            return 0

    def _drop_unreadable(self) -> None:
        """Read every clip once; drop the unreadable ones from the splits and count them."""

        def readable(path: Path) -> bool:
            try:
                read_audio(path)
            except ValueError:
                return False
            return True

        paths = [path for items in self.splits.values() for path, _ in items]
        with ThreadPoolExecutor(max_workers=max(1, self.num_workers)) as pool:
            ok = dict(zip(paths, pool.map(readable, paths)))
        bad = [str(path) for path in paths if not ok[path]]
        if bad:
            self.skipped += bad
            self.splits = {split: [it for it in items if ok[it[0]]] for split, items in self.splits.items()}
            log.warning(
                "skipped %d unreadable clip(s) under %s (data.skip_corrupt=true): %s%s",
                len(bad),
                self.root,
                ", ".join(bad[:5]),
                ", ..." if len(bad) > 5 else "",
            )

    def input_spec(self) -> dict:
        """The ``sample_rate`` the model reads."""
        return {"sample_rate": self.sample_rate}

    def extra_artifacts(self) -> dict[str, str]:
        """``audio.json``: the model's sample rate."""
        return {"audio.json": json.dumps({"sample_rate": self.sample_rate})}

    def use_extra_artifacts(self, artifacts: Mapping[str, str]) -> None:
        """Adopt a checkpoint's sample rate (before :meth:`setup`).

        The checkpoint's rate wins over this config's: inputs are then resampled to the rate the
        model was trained at, never read at a rate it does not expect.
        """
        if "audio.json" in artifacts:
            rate = int(json.loads(artifacts["audio.json"])["sample_rate"])
            if rate != self.sample_rate:
                log.warning(
                    "data.sample_rate=%d differs from the checkpoint's %d Hz; inputs are resampled to %d Hz",
                    self.sample_rate,
                    rate,
                    rate,
                )
                self.sample_rate = rate

    @property
    def max_samples(self) -> int | None:
        """Longest clip in samples (``max_seconds`` at the model's rate), or ``None``."""
        return None if self.max_seconds is None else round(self.max_seconds * self.sample_rate)

    def _collate(self) -> PadCollate:
        return PadCollate(self.max_samples if self.batching == "fixed" else None)

    def loader(self, split: str, train: bool) -> DataLoader:
        if split not in self.splits:
            self.setup()
        items = self.splits[split]
        sampler, shuffle = None, train
        if not train and self.batching == "variable":
            # Evaluation order does not matter: sort by length so batches carry little padding.
            items = sorted(items, key=lambda item: self._frames(item[0]))
        elif train and self.batching == "variable" and self.bucket_by_length:
            lengths = [self._frames(path) for path, _ in items]
            sampler, shuffle = LengthBucketSampler(lengths, self.batch_size, self.seed), False
        dataset = AudioClips(items, self.sample_rate, self.max_samples, random_crop=train, cache=self.cache)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            collate_fn=self._collate(),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def _frames(self, path: Path) -> int:
        if path not in self._frame_cache:
            self._frame_cache[path] = audio_frames(path, self.sample_rate)
        return self._frame_cache[path]

    def test_dataloader(self) -> DataLoader:
        if "test" not in self.splits:
            self.setup()
        if not self.splits["test"]:
            raise ValueError(f"{self.root}: the test split is empty")
        return super().test_dataloader()

    def load_inputs(self, paths: list[str]) -> tuple[Tensor, ...]:
        """Read user files into one batch for ``task(*batch)``, preprocessed as in evaluation.

        Returns ``(waveforms, lengths)`` for ``variable`` batching, ``(waveforms,)`` for ``fixed``.
        """
        if not paths:
            raise ValueError("no input files given")
        clips = []
        for path in paths:
            waveform, _ = read_audio(path, self.sample_rate)
            if self.max_samples is not None:
                waveform = waveform[: self.max_samples]
            clips.append((waveform, 0))
        batch = self._collate()(clips)
        return batch[:-1]
