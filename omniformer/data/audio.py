"""Audio classification data: read clips with soundfile, resample, mix to mono, pad and batch.

Clips are read with ``soundfile`` (torchaudio's own loader needs torchcodec, which is not a
dependency), mixed to mono and resampled with ``torchaudio.functional.resample`` to the model's
``sample_rate``. Features are *not* computed here: the model's tokenizer computes log-mel on the
accelerator. Batches are either

* ``variable``: each batch padded with zeros to its longest clip, ``(waveforms, lengths, labels)``;
  the tokenizer turns ``lengths`` into a key-padding mask. With ``bucket_by_length`` training
  batches group clips of similar length, so little compute goes into padding; or
* ``fixed``: every clip cropped or zero-padded to ``max_seconds``, ``(waveforms, labels)``, for
  fixed shapes (the model sees the padding as silence).

Three sources: the Free Spoken Digit Dataset in its own layout, torchaudio's ``SPEECHCOMMANDS`` with
its official validation/test lists, and a generic folder with one sub-folder per class.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import soundfile as sf
import torch
import torchaudio
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from omniformer.data.wav import declared_frames

log = logging.getLogger("omniformer")

SUPPORTED_SUFFIXES = (".wav", ".flac", ".ogg")
# Audio formats people have that this loader cannot read: a folder holding them raises instead of
# silently training on fewer clips.
UNSUPPORTED_AUDIO = (".mp3", ".m4a", ".aac", ".wma", ".opus", ".amr", ".mp4", ".webm")
BatchingKind = Literal["variable", "fixed"]
Item = tuple[Path, int]


# ---------------------------------------------------------------------------------------------- reading
def check_audio_path(path: str | Path) -> Path:
    """Return ``path`` if it names an existing file of a supported format; raise naming it otherwise."""
    path = Path(path).expanduser()
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported audio format {path.suffix or '(no extension)'!r}; "
            f"supported: {', '.join(SUPPORTED_SUFFIXES)} (convert it, e.g. with ffmpeg)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"audio file {path} does not exist")
    return path


def read_audio(path: str | Path, sample_rate: int | None = None) -> tuple[Tensor, int]:
    """Read an audio file as a mono float32 waveform (1-D), resampled to ``sample_rate`` if given.

    Returns the waveform and its rate. Raises one error naming the file if it is missing, empty (0
    bytes), unreadable or corrupt, shorter than its WAV header declares, has no samples, or holds
    non-finite values.
    """
    path = check_audio_path(path)
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes); delete it or replace it with a real recording")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise ValueError(f"{path} is not a readable audio file (corrupt or truncated?): {err}") from None
    check_complete(path, data.shape[0])
    if data.shape[0] == 0:
        raise ValueError(f"{path} has zero length: its header is valid but it holds no samples")
    if not np.isfinite(data).all():
        raise ValueError(f"{path} holds NaN or infinite samples")
    waveform = to_mono(torch.from_numpy(data))
    if sample_rate is not None and rate != sample_rate:
        waveform = resample(waveform, rate, sample_rate)
        rate = sample_rate
    return waveform, rate


def check_complete(path: Path, frames: int) -> None:
    """Raise, naming ``path``, if its WAV header declares more frames than the ``frames`` it holds."""
    declared = declared_frames(path)
    if declared is not None and frames < declared:
        raise ValueError(
            f"{path} is truncated: its header declares {declared} frames but the file holds {frames}; "
            "copy it again or delete it (data.skip_corrupt=true skips unreadable files)"
        )


def to_mono(data: Tensor) -> Tensor:
    """Average the channels of a ``samples×channels`` array (soundfile's layout) into one 1-D waveform."""
    if data.ndim == 1:
        return data
    if data.ndim != 2:
        raise ValueError(f"expected samples×channels audio, got shape {tuple(data.shape)}")
    return data.mean(dim=1) if data.shape[1] > 1 else data[:, 0]


def resample(waveform: Tensor, orig_rate: int, new_rate: int) -> Tensor:
    """Resample with ``torchaudio.functional.resample`` (band-limited sinc interpolation)."""
    if orig_rate <= 0 or new_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_rate} -> {new_rate}")
    if orig_rate == new_rate:
        return waveform
    return torchaudio.functional.resample(waveform, int(orig_rate), int(new_rate))


def audio_frames(path: Path, sample_rate: int) -> int:
    """Samples of a file at ``sample_rate``, read from its header only (for length bucketing)."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        if path.is_file() and path.stat().st_size == 0:
            raise ValueError(
                f"{path} is empty (0 bytes); delete it or replace it with a real recording"
            ) from None
        raise ValueError(f"{path} is not a readable audio file (corrupt or truncated?): {err}") from None
    check_complete(path, info.frames)
    return math.ceil(info.frames * sample_rate / info.samplerate)


# ---------------------------------------------------------------------------------------------- batching
class AudioClips(Dataset):
    """Labelled clips read on access: ``(waveform, label)`` with the waveform at ``sample_rate``.

    Args:
        items: ``(path, label)`` pairs.
        sample_rate: rate every clip is resampled to.
        max_samples: clips longer than this are cropped (``None`` = keep whole clips).
        random_crop: crop at a random offset (training) instead of keeping the beginning.
    """

    def __init__(
        self, items: Sequence[Item], sample_rate: int, max_samples: int | None, random_crop: bool = False
    ) -> None:
        self.items, self.sample_rate = list(items), sample_rate
        self.max_samples, self.random_crop = max_samples, random_crop

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.items[index]
        waveform, _ = read_audio(path, self.sample_rate)
        if self.max_samples is not None and len(waveform) > self.max_samples:
            extra = len(waveform) - self.max_samples
            start = int(torch.randint(extra + 1, ())) if self.random_crop else 0
            waveform = waveform[start : start + self.max_samples]
        return waveform, label


class PadCollate:
    """Stack clips into a zero-padded batch.

    Args:
        fixed_samples: pad every clip to exactly this many samples and return ``(waveforms, labels)``;
            ``None`` pads to the batch's longest clip and returns ``(waveforms, lengths, labels)``.
    """

    def __init__(self, fixed_samples: int | None = None) -> None:
        self.fixed_samples = fixed_samples

    def __call__(self, batch: Sequence[tuple[Tensor, int]]) -> tuple[Tensor, ...]:
        waves, labels = zip(*batch)
        lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
        width = self.fixed_samples or int(lengths.max())
        out = torch.zeros(len(waves), width)
        for row, wave in enumerate(waves):
            out[row, : min(len(wave), width)] = wave[:width]
        labels = torch.tensor(labels, dtype=torch.long)
        if self.fixed_samples is not None:
            return out, labels
        return out, lengths, labels


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
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
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
class AudioClassificationDataModule(L.LightningDataModule):
    """Shared machinery of the audio data modules: splits of ``(path, label)``, loaders, artifacts.

    Subclasses implement :meth:`find_splits`. Args common to all of them:

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
    """

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
    ) -> None:
        super().__init__()
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
        self.skipped: list[str] = []
        self.classes: list[str] | None = None
        self._checkpoint_classes: list[str] | None = None
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
        if self._checkpoint_classes is not None:
            unknown = sorted(set(classes) - set(self._checkpoint_classes))
            if unknown:
                raise ValueError(
                    f"{self.root}: classes {unknown} are not among the {len(self._checkpoint_classes)} "
                    "classes the checkpoint was trained on"
                )
            classes = self._checkpoint_classes
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
            self.root,
            {k: len(v) for k, v in self.splits.items()},
            len(self.classes),
            self.sample_rate,
        )

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

    def spec(self) -> dict:
        """Sizes the model is built from: ``num_classes``, ``class_names`` and ``sample_rate``."""
        if self.classes is None:
            raise RuntimeError("call setup() before spec(): the classes are found while setting up")
        return {
            "num_classes": len(self.classes),
            "class_names": list(self.classes),
            "sample_rate": self.sample_rate,
        }

    def artifacts(self) -> dict[str, str]:
        """``classes.json`` (class names in label order) and ``audio.json`` (the model's sample rate)."""
        return {
            "classes.json": json.dumps(self.classes, ensure_ascii=False),
            "audio.json": json.dumps({"sample_rate": self.sample_rate}),
        }

    def use_artifacts(self, artifacts: dict[str, str]) -> None:
        """Adopt a checkpoint's class order and sample rate (before :meth:`setup`).

        The checkpoint's rate wins over this config's: inputs are then resampled to the rate the
        model was trained at, never read at a rate it does not expect.
        """
        if "classes.json" in artifacts:
            classes = json.loads(artifacts["classes.json"])
            if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
                raise ValueError("the checkpoint's classes.json is not a list of class names")
            self._checkpoint_classes = classes
            self.classes = list(classes)
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

    def _loader(self, split: str, train: bool) -> DataLoader:
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
        dataset = AudioClips(items, self.sample_rate, self.max_samples, random_crop=train)
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

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        if "test" not in self.splits:
            self.setup()
        if not self.splits["test"]:
            raise ValueError(f"{self.root}: the test split is empty")
        return self._loader("test", train=False)

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


_FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)$")


class SpokenDigitsDataModule(AudioClassificationDataModule):
    """Free Spoken Digit Dataset (Jakobovski et al.), in its own layout, with its standard split.

    ``root`` holds ``recordings/{digit}_{speaker}_{index}.wav`` (or is that folder itself); 8 kHz
    mono. Standard split: takes with index 0-4 are the test set. Validation is held out of the
    training takes deterministically: takes ``5 .. 5 + val_takes - 1`` of every speaker and digit,
    mirroring how the test set is built.

    Args:
        root: the dataset folder (containing ``recordings/``) or the recordings folder.
        val_takes: how many takes per speaker and digit go to validation.
        sample_rate: the model's rate (the recordings are 8 kHz; other rates resample).
        **kwargs: see :class:`AudioClassificationDataModule`.
    """

    TEST_TAKES = 5

    def __init__(self, root: str, val_takes: int = 5, sample_rate: int = 8000, **kwargs) -> None:
        super().__init__(root, sample_rate=sample_rate, **kwargs)
        if not 1 <= val_takes < 45:
            raise ValueError(f"data.val_takes must lie in [1, 44], got {val_takes}")
        self.val_takes = val_takes

    def find_splits(self) -> tuple[list[str], dict[str, list[tuple[Path, str]]]]:
        if self.root is None or not self.root.is_dir():
            raise FileNotFoundError(f"data.root: FSDD folder {self.root} does not exist")
        folder = self.root / "recordings" if (self.root / "recordings").is_dir() else self.root
        files = sorted(folder.glob("*.wav"))
        if not files:
            raise FileNotFoundError(
                f"data.root: no {{digit}}_{{speaker}}_{{index}}.wav files in {folder}; point data.root at "
                "the free-spoken-digit-dataset folder (the one containing recordings/)"
            )
        splits: dict[str, list[tuple[Path, str]]] = {"train": [], "val": [], "test": []}
        for path in files:
            match = _FSDD_NAME.match(path.stem)
            if match is None:
                raise ValueError(f"{path}: not an FSDD file name ({{digit}}_{{speaker}}_{{index}}.wav)")
            digit, take = match.group(1), int(match.group(3))
            if take < self.TEST_TAKES:
                split = "test"
            elif take < self.TEST_TAKES + self.val_takes:
                split = "val"
            else:
                split = "train"
            splits[split].append((path, digit))
        classes = sorted({digit for items in splits.values() for _, digit in items})
        return classes, splits


class SpeechCommandsDataModule(AudioClassificationDataModule):
    """Speech Commands (Warden 2018) through torchaudio's ``SPEECHCOMMANDS``, official split lists.

    torchaudio finds (or downloads) the files and applies ``validation_list.txt`` and
    ``testing_list.txt``; the clips are read with soundfile. Classes are the word folders of the
    training split (35 in v0.02, 30 in v0.01); ``_background_noise_`` is not a class.

    Args:
        root: where ``SpeechCommands/<version>/`` lies or is downloaded to.
        download: fetch the archive when it is missing (about 2.3 GB for v0.02).
        version: ``"speech_commands_v0.02"`` or ``"speech_commands_v0.01"``.
        sample_rate: the model's rate (the clips are 16 kHz).
        max_seconds: clips are at most 1 s long.
        **kwargs: see :class:`AudioClassificationDataModule`.
    """

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        version: str = "speech_commands_v0.02",
        sample_rate: int = 16000,
        max_seconds: float | None = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(root, sample_rate=sample_rate, max_seconds=max_seconds, **kwargs)
        if version not in ("speech_commands_v0.01", "speech_commands_v0.02"):
            raise ValueError(
                f"data.version={version!r}; choose speech_commands_v0.01 or speech_commands_v0.02"
            )
        self.download, self.version = download, version

    def prepare_data(self) -> None:
        if self.download:
            self._subset(None)

    def _subset(self, subset: str | None):
        from torchaudio.datasets import SPEECHCOMMANDS

        if self.download:
            self.root.mkdir(parents=True, exist_ok=True)
        try:
            return SPEECHCOMMANDS(str(self.root), url=self.version, download=self.download, subset=subset)
        except RuntimeError as err:
            raise FileNotFoundError(
                f"data.root: Speech Commands not found under {self.root} ({err}); "
                "set data.download=true to fetch it"
            ) from None
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"data.root: {err.filename} is missing from the Speech Commands folder under {self.root}"
            ) from None

    def find_splits(self) -> tuple[list[str], dict[str, list[tuple[Path, str]]]]:
        splits: dict[str, list[tuple[Path, str]]] = {}
        for split, subset in (("train", "training"), ("val", "validation"), ("test", "testing")):
            dataset = self._subset(subset)
            items = []
            for n in range(len(dataset)):
                relpath, _, label, *_ = dataset.get_metadata(n)
                items.append((self.root / "SpeechCommands" / relpath, label))
            splits[split] = items
        classes = sorted({label for _, label in splits["train"]})
        for split in ("val", "test"):
            strange = sorted({label for _, label in splits[split]} - set(classes))
            if strange:
                raise ValueError(
                    f"{self.root}: {split} list names words {strange} that have no training clips"
                )
        return classes, splits


class AudioFolderDataModule(AudioClassificationDataModule):
    """Any folder with one sub-folder per class of ``.wav`` / ``.flac`` / ``.ogg`` clips.

    A deterministic stratified split (per class, seeded) holds out ``val_fraction`` and
    ``test_fraction`` of each class's clips. Hidden files and non-audio files are skipped; audio in a
    format soundfile cannot read (mp3, m4a, ...) raises, naming the file.

    Args:
        root: the folder of class sub-folders.
        val_fraction: share of each class used for validation.
        test_fraction: share of each class used for testing.
        **kwargs: see :class:`AudioClassificationDataModule`.
    """

    def __init__(self, root: str, val_fraction: float = 0.1, test_fraction: float = 0.1, **kwargs) -> None:
        super().__init__(root, **kwargs)
        if not 0 < val_fraction < 1 or not 0 < test_fraction < 1 or val_fraction + test_fraction >= 1:
            raise ValueError(
                f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must each lie in "
                "(0, 1) and sum to less than 1"
            )
        self.val_fraction, self.test_fraction = val_fraction, test_fraction

    def find_splits(self) -> tuple[list[str], dict[str, list[tuple[Path, str]]]]:
        if self.root is None or not self.root.is_dir():
            raise FileNotFoundError(f"data.root: audio folder {self.root} does not exist")
        class_dirs = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not class_dirs:
            raise FileNotFoundError(f"data.root: {self.root} has no class sub-folders (one per class)")
        splits: dict[str, list[tuple[Path, str]]] = {"train": [], "val": [], "test": []}
        for folder in class_dirs:
            files = []
            for path in sorted(folder.rglob("*")):
                if not path.is_file() or any(part.startswith(".") for part in path.relative_to(folder).parts):
                    continue
                suffix = path.suffix.lower()
                if suffix in UNSUPPORTED_AUDIO:
                    raise ValueError(
                        f"{path}: unsupported audio format {suffix!r}; supported: "
                        f"{', '.join(SUPPORTED_SUFFIXES)} (convert it, e.g. with ffmpeg)"
                    )
                if suffix in SUPPORTED_SUFFIXES:
                    files.append(path)
            if not files:
                raise FileNotFoundError(
                    f"class folder {folder} holds no {'/'.join(SUPPORTED_SUFFIXES)} files"
                )
            n_val = max(1, round(len(files) * self.val_fraction))
            n_test = max(1, round(len(files) * self.test_fraction))
            if len(files) - n_val - n_test < 1:
                raise ValueError(
                    f"class folder {folder} has {len(files)} clip(s): too few for a train, val and test split"
                )
            random.Random(f"{self.seed}/{folder.name}").shuffle(files)
            splits["val"] += [(p, folder.name) for p in files[:n_val]]
            splits["test"] += [(p, folder.name) for p in files[n_val : n_val + n_test]]
            splits["train"] += [(p, folder.name) for p in files[n_val + n_test :]]
        return [d.name for d in class_dirs], splits
