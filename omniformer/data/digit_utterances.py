"""Spoken-digit utterances: 1-5 real Free Spoken Digit Dataset clips of one speaker, joined with silence.

FSDD (Jakobovski et al.) holds single spoken digits, ``{digit}_{speaker}_{take}.wav`` at 8 kHz. An
utterance here is ``n`` of them by the same speaker, with a short random silence between clips, and
its transcript ("three nine two"): a real-audio stand-in for connected speech that a prefix-LM can
learn to transcribe in minutes. Each utterance is a pure function of ``(seed, split, index)``, so
loader workers agree and a resumed run sees exactly the items it would have seen.

Splits follow FSDD's standard split: takes 0-4 of every speaker and digit are the test set; the
other takes are divided per speaker and digit between training and validation (a seeded share of
them validates), so no clip is ever in two splits. ``test_speakers`` holds whole speakers out.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor
from torch.utils.data import Dataset

from omniformer.data.audio_files import read_audio
from omniformer.data.splits import hold_out
from omniformer.seeding import mix_seed

SPLITS = ("train", "val", "test")
#: Utterances per split when ``size`` is not given (train is generated on the fly, so it is cheap).
DEFAULT_SIZES = {"train": 20000, "val": 500, "test": 1000}
#: FSDD's standard split: takes below this index are the test set.
TEST_TAKES = 5
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)$")
TextForm = Literal["words", "digits"]


@dataclass(frozen=True)
class Clip:
    """One FSDD recording: its file, the digit spoken, the speaker and the take."""

    path: Path
    digit: int
    speaker: str
    take: int


@dataclass(frozen=True)
class UtterancePlan:
    """What an utterance is made of: its speaker, the clips in order and the silences between them
    (``gaps[i]`` samples after ``clips[i]``, at the dataset's rate)."""

    speaker: str
    clips: tuple[Clip, ...]
    gaps: tuple[int, ...]

    @property
    def digits(self) -> tuple[int, ...]:
        """The digits spoken, in order."""
        return tuple(clip.digit for clip in self.clips)


def fsdd_clips(root: str | Path) -> list[Clip]:
    """Every recording under ``root`` (the FSDD folder holding ``recordings/``, or that folder itself).

    Raises:
        FileNotFoundError: the folder does not exist or holds no ``.wav`` files (naming it).
        ValueError: a ``.wav`` file is not named ``{digit}_{speaker}_{take}.wav`` (naming it).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data.root: FSDD folder {root} does not exist")
    folder = root / "recordings" if (root / "recordings").is_dir() else root
    clips = []
    for path in sorted(folder.glob("*.wav")):
        match = FSDD_NAME.match(path.stem)
        if match is None:
            raise ValueError(f"{path}: not an FSDD file name ({{digit}}_{{speaker}}_{{take}}.wav)")
        clips.append(Clip(path, int(match.group(1)), match.group(2), int(match.group(3))))
    if not clips:
        raise FileNotFoundError(
            f"data.root: no {{digit}}_{{speaker}}_{{take}}.wav files in {folder}; point data.root at the "
            "free-spoken-digit-dataset folder (the one containing recordings/)"
        )
    return clips


def split_clips(
    clips: Sequence[Clip], *, val_fraction: float, split_seed: int, test_speakers: Sequence[str] = ()
) -> dict[str, list[Clip]]:
    """Assign every clip to at most one of ``train``, ``val`` and ``test``.

    Without ``test_speakers``: takes 0-4 test; of the other takes of each speaker and digit,
    ``max(1, round(n · val_fraction))`` validate (a shuffle seeded by ``split_seed``, the speaker and
    the digit) and the rest train. With ``test_speakers``: all their takes test and nothing else does
    (the other speakers' takes 0-4 are left unused, so train and val match the standard split's).
    """
    if isinstance(test_speakers, str):  # data.test_speakers=theo means [theo], not its letters
        test_speakers = [test_speakers]
    speakers = sorted({clip.speaker for clip in clips})
    unknown = sorted(set(test_speakers) - set(speakers))
    if unknown:
        raise ValueError(f"data.test_speakers: {unknown} not among the recordings' speakers {speakers}")
    if test_speakers and set(test_speakers) == set(speakers):
        raise ValueError(
            f"data.test_speakers={list(test_speakers)} holds out every speaker; none left to train"
        )
    splits: dict[str, list[Clip]] = {split: [] for split in SPLITS}
    groups: dict[tuple[str, int], list[Clip]] = {}
    for clip in sorted(clips, key=lambda c: (c.speaker, c.digit, c.take)):
        if test_speakers:
            if clip.speaker in test_speakers:
                splits["test"].append(clip)
                continue
            if clip.take < TEST_TAKES:
                continue
        elif clip.take < TEST_TAKES:
            splits["test"].append(clip)
            continue
        groups.setdefault((clip.speaker, clip.digit), []).append(clip)
    for (speaker, digit), members in groups.items():
        where = f"speaker {speaker}, digit {digit} ({len(members)} training take(s))"
        parts = hold_out(members, f"{speaker}/{digit}", split_seed, {"val": val_fraction}, where)
        splits["val"] += parts["val"]
        splits["train"] += parts["train"]
    return splits


class SpokenDigitUtterances(Dataset):
    """Utterances of 1-5 spoken digits from real FSDD clips: items ``(waveform, text)``.

    ``waveform`` is a float32 1-D tensor at ``sample_rate``; ``text`` is the digits spoken, as words
    ("three nine two") or digits ("3 9 2"). Item ``index`` of a split is a pure function of
    ``(seed, split, index)``: a speaker drawn uniformly among the split's speakers, ``n`` digits
    (uniform in ``[min_digits, max_digits]``) each drawn among that speaker's digits in the split,
    one of the speaker's clips of each, and a silence uniform in ``gap_ms`` between clips.

    Args:
        root: the FSDD folder (containing ``recordings/``) or the recordings folder.
        split: ``"train"``, ``"val"`` or ``"test"``.
        size: utterances in the split (default: 20000 train, 500 val, 1000 test).
        seed: seed of the utterances.
        sample_rate: rate of the waveforms (the recordings are 8 kHz; others resample).
        min_digits: fewest digits in an utterance.
        max_digits: most digits in an utterance.
        gap_ms: ``(shortest, longest)`` silence between two clips, in milliseconds.
        text_form: ``"words"`` or ``"digits"``.
        val_fraction: share of each speaker's and digit's non-test takes that validates.
        split_seed: seed of that share (fixed, so validation does not change with ``seed``).
        test_speakers: speakers held out whole: all their takes test, nothing else does.
    """

    def __init__(
        self,
        *,
        root: str | Path,
        split: str,
        size: int | None = None,
        seed: int = 0,
        sample_rate: int = 8000,
        min_digits: int = 1,
        max_digits: int = 5,
        gap_ms: tuple[float, float] = (50.0, 250.0),
        text_form: TextForm = "words",
        val_fraction: float = 0.1,
        split_seed: int = 0,
        test_speakers: Sequence[str] = (),
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split={split!r}; choose one of {', '.join(SPLITS)}")
        if sample_rate <= 0:
            raise ValueError(f"data.sample_rate must be positive, got {sample_rate}")
        if not 1 <= min_digits <= max_digits:
            raise ValueError(
                f"data.min_digits={min_digits}, data.max_digits={max_digits}: need 1 <= min <= max"
            )
        low, high = (float(v) for v in gap_ms)
        if not 0 <= low <= high:
            raise ValueError(f"data.gap_ms={list(gap_ms)}: need 0 <= shortest <= longest")
        if text_form not in ("words", "digits"):
            raise ValueError(f"data.text_form={text_form!r}; choose 'words' or 'digits'")
        if not 0 < val_fraction < 1:
            raise ValueError(f"data.val_fraction={val_fraction} must lie strictly between 0 and 1")
        size = DEFAULT_SIZES[split] if size is None else int(size)
        if size < 1:
            raise ValueError(f"size of the {split} split must be >= 1, got {size}")
        self.root, self.split, self.size, self.seed = Path(root).expanduser(), split, size, seed
        self.sample_rate, self.min_digits, self.max_digits = int(sample_rate), min_digits, max_digits
        self.gap_ms, self.text_form = (low, high), text_form
        self.clips = split_clips(
            fsdd_clips(self.root),
            val_fraction=val_fraction,
            split_seed=split_seed,
            test_speakers=test_speakers,
        )[split]
        if not self.clips:
            raise ValueError(f"{self.root}: no FSDD clips fall in the {split} split")
        self.by_speaker: dict[str, dict[int, list[Clip]]] = {}
        for clip in self.clips:
            self.by_speaker.setdefault(clip.speaker, {}).setdefault(clip.digit, []).append(clip)
        self.speakers = sorted(self.by_speaker)
        self._waves: dict[Path, Tensor] = {}  # decoded clips, at most the split's (~50 MB at 8 kHz)

    def __len__(self) -> int:
        return self.size

    def plan(self, index: int) -> UtterancePlan:
        """The speaker, clips and silences of utterance ``index`` (without reading any audio)."""
        if not 0 <= index < self.size:
            raise IndexError(f"utterance {index} out of range for the {self.split} split of {self.size}")
        rng = random.Random(mix_seed(self.seed, SPLITS.index(self.split), index))
        speaker = rng.choice(self.speakers)
        digits = self.by_speaker[speaker]
        choices = sorted(digits)
        count = rng.randint(self.min_digits, self.max_digits)
        clips = tuple(rng.choice(digits[rng.choice(choices)]) for _ in range(count))
        low, high = (round(ms * self.sample_rate / 1000) for ms in self.gap_ms)
        gaps = tuple(rng.randint(low, high) for _ in range(count - 1))
        return UtterancePlan(speaker, clips, gaps)

    def text(self, digits: Sequence[int]) -> str:
        """The transcript of ``digits`` in this dataset's ``text_form``."""
        return " ".join(DIGIT_WORDS[d] if self.text_form == "words" else str(d) for d in digits)

    def texts(self) -> list[str]:
        """Every utterance's transcript, in index order, without reading any audio."""
        return [self.text(self.plan(index).digits) for index in range(self.size)]

    def waveform(self, clip: Clip) -> Tensor:
        """``clip`` read at the dataset's rate (decoded once, then kept)."""
        if clip.path not in self._waves:
            self._waves[clip.path] = read_audio(clip.path, self.sample_rate)[0]
        return self._waves[clip.path]

    def __getitem__(self, index: int) -> tuple[Tensor, str]:
        plan = self.plan(index)
        parts = []
        for position, clip in enumerate(plan.clips):
            parts.append(self.waveform(clip))
            if position < len(plan.gaps):
                parts.append(torch.zeros(plan.gaps[position], dtype=torch.float32))
        return torch.cat(parts).to(torch.float32), self.text(plan.digits)
