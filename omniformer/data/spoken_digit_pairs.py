"""Spoken-digit utterances paired with their transcripts, for a prefix LM (``data=spoken_digit_utterances``).

    omniformer-train experiment=transcribe_digits data.root=../shared/data/fsdd
    omniformer-train experiment=transcribe_digits data.root=../shared/data/fsdd data.test_speakers=[theo]

The pairs are :class:`~omniformer.data.digit_utterances.SpokenDigitUtterances` (1-5 real FSDD clips
of one speaker with short silences, "three nine two"); batching, padding, the checkpoint's
vocabulary and exact resume are :class:`~omniformer.data.paired.PairedDataModule`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch.utils.data import Dataset

from omniformer.data.digit_utterances import SpokenDigitUtterances, TextForm
from omniformer.data.digit_vocab import digit_vocab
from omniformer.data.paired import PairedDataModule


class SpokenDigitUtterancesDataModule(PairedDataModule):
    """Train / val / test splits of spoken-digit utterances and their transcripts (audio → text).

    Training utterances are drawn with ``seed`` (the run's); validation and test utterances with
    ``split_seed``, fixed, so they are the same items whatever the training seed, and runs with
    different seeds are scored on the same utterances.

    Args:
        root: the FSDD folder (containing ``recordings/``) or the recordings folder.
        train_size: training utterances (generated on the fly; an epoch is this many).
        val_size: validation utterances.
        test_size: test utterances.
        seed: seed of the training utterances (the run's seed).
        sample_rate: rate of the waveforms (the recordings are 8 kHz; others resample).
        min_digits: fewest digits in an utterance.
        max_digits: most digits in an utterance.
        gap_ms: ``[shortest, longest]`` silence between two clips, in milliseconds.
        text_form: ``words`` ("three nine two") or ``digits`` ("3 9 2").
        val_fraction: share of each speaker's and digit's non-test takes that validates.
        split_seed: seed of that share and of the val / test utterances (fixed: they never change with
            ``seed``).
        test_speakers: speakers held out whole (all their takes test, nothing else does); empty =
            FSDD's standard split (takes 0-4 test).
        batch_size: training pairs per batch.
        eval_batch_size: pairs per validation / test batch (default: ``batch_size``).
        num_workers: loader worker processes.
    """

    def __init__(
        self,
        *,
        root: str,
        train_size: int = 20000,
        val_size: int = 500,
        test_size: int = 1000,
        seed: int = 0,
        sample_rate: int = 8000,
        min_digits: int = 1,
        max_digits: int = 5,
        gap_ms: Sequence[float] = (50.0, 250.0),
        text_form: TextForm = "words",
        val_fraction: float = 0.1,
        split_seed: int = 0,
        test_speakers: Sequence[str] | str = (),
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__(
            modality="audio",
            sample_rate=sample_rate,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
        )
        self.vocab = digit_vocab(text_form)
        self.root = Path(root).expanduser()
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.seeds = {"train": seed, "val": split_seed, "test": split_seed}
        if isinstance(test_speakers, str):  # data.test_speakers=theo means [theo]
            test_speakers = [test_speakers]
        self.options = {
            "sample_rate": sample_rate,
            "min_digits": min_digits,
            "max_digits": max_digits,
            "gap_ms": tuple(gap_ms),
            "text_form": text_form,
            "val_fraction": val_fraction,
            "split_seed": split_seed,
            "test_speakers": tuple(test_speakers),
        }

    def make_splits(self) -> dict[str, Dataset]:
        """The three :class:`SpokenDigitUtterances` splits."""
        return {
            split: SpokenDigitUtterances(
                root=self.root, split=split, size=size, seed=self.seeds[split], **self.options
            )
            for split, size in self.sizes.items()
        }
