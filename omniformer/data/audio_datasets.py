"""Published audio datasets: the Free Spoken Digit Dataset and Speech Commands, with their standard splits."""

from __future__ import annotations

import re
from pathlib import Path

from omniformer.data.audio import AudioClassificationDataModule

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
