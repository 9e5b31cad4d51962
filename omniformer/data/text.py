"""Text corpora for language modelling: read, split, tokenise once, cache, sample windows.

The corpus is one UTF-8 file or a folder of ``.txt`` files. The first ``1 - val_fraction`` of the
characters is the training split, the rest validation (deterministic, like nanoGPT). A BPE vocabulary
is trained on the training split; a char vocabulary holds every character of the whole corpus, sorted
(a character met only in the validation split needs an id too; for Tiny Shakespeare both splits give
the same 65 characters). Ids of both splits are cached as ``.npy`` files keyed by the text's
hash and the tokenizer settings, and memory-mapped on later runs.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from omniformer.data.windows import ContiguousWindows, RandomWindows, WindowLoader
from omniformer.tokenizers.vocab import (
    UnknownCharacterError,
    VocabKind,
    Vocabulary,
    train_vocab,
    vocab_from_json,
)

BUNDLED_SHAKESPEARE = Path(__file__).parent / "assets" / "tinyshakespeare.txt"


def default_cache_dir() -> Path:
    """Where tokenised corpora are cached: ``$OMNIFORMER_CACHE`` or ``~/.cache/omniformer``."""
    return Path(os.environ.get("OMNIFORMER_CACHE", Path.home() / ".cache" / "omniformer"))


def read_text(path: str | Path) -> str:
    """Read a UTF-8 file, or every ``.txt`` file of a folder (sorted, joined by newlines).

    Raises one error naming the file (and byte offset) at fault: missing, empty or not UTF-8.
    """
    return "\n".join(text for _, text in read_text_files(path))


def read_text_files(path: str | Path) -> list[tuple[Path, str]]:
    """``(file, text)`` of a UTF-8 file, or of every ``.txt`` file of a folder (sorted); errors as
    :func:`read_text`'s."""
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise FileNotFoundError(f"text folder {path} contains no .txt files")
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"text file or folder {path} does not exist")
    parts = []
    for file in files:
        raw = file.read_bytes()
        try:
            parts.append((file, raw.decode("utf-8")))
        except UnicodeDecodeError as err:
            raise ValueError(
                f"{file} is not valid UTF-8: byte offset {err.start} ({raw[err.start : err.start + 1]!r})"
            ) from None
    if not any(text.strip() for _, text in parts):
        raise ValueError(f"text source {path} is empty")
    return parts


def locate(parts: list[tuple[Path, str]], position: int) -> tuple[Path, int]:
    """The file and 1-based line of character ``position`` of the parts joined by newlines."""
    for file, text in parts:
        if position <= len(text):  # == len(text): the joining newline, counted as the file's end
            return file, text.count("\n", 0, position) + 1
        position -= len(text) + 1
    raise IndexError(f"position {position} lies beyond the corpus")


class TextDataModule(L.LightningDataModule):
    """Language-modelling data from a UTF-8 file or folder (default: the bundled Tiny Shakespeare).

    Args:
        path: a text file or a folder of ``.txt`` files; ``None`` uses the bundled Tiny Shakespeare.
        tokenizer: ``"bpe"`` (byte-level BPE) or ``"char"``.
        vocab_size: BPE vocabulary size (ignored for ``char``).
        block_size: tokens of context per training window.
        batch_size: windows per batch.
        val_fraction: share of the text, taken from its end, used for validation.
        seed: seed of the training-window sampler.
        num_workers: loader worker processes (0 = sample in the main process; sampling is cheap).
        cache_dir: where tokenised ids are cached (default: :func:`default_cache_dir`).
        vocab_json: a saved vocabulary to reuse instead of training one (for fine-tuning).
    """

    def __init__(
        self,
        path: str | None = None,
        tokenizer: VocabKind = "bpe",
        vocab_size: int = 512,
        block_size: int = 128,
        batch_size: int = 32,
        val_fraction: float = 0.1,
        seed: int = 1337,
        num_workers: int = 0,
        cache_dir: str | None = None,
        vocab_json: str | None = None,
    ) -> None:
        super().__init__()
        if tokenizer not in ("bpe", "char"):
            raise ValueError(f"data.tokenizer={tokenizer!r} is not a text tokenizer; choose 'bpe' or 'char'")
        if not 0 < val_fraction < 1:
            raise ValueError(f"data.val_fraction must lie strictly between 0 and 1, got {val_fraction}")
        if block_size < 1 or batch_size < 1:
            raise ValueError(
                f"data.block_size and data.batch_size must be >= 1, got {block_size}, {batch_size}"
            )
        self.path = Path(path).expanduser() if path else BUNDLED_SHAKESPEARE
        self.tokenizer, self.vocab_size = tokenizer, vocab_size
        self.block_size, self.batch_size = block_size, batch_size
        self.val_fraction, self.seed, self.num_workers = val_fraction, seed, num_workers
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.vocab_json = vocab_json
        self.vocab: Vocabulary | None = None
        self.train_ids: np.ndarray | None = None
        self.val_ids: np.ndarray | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.vocab is not None:
            return
        parts = read_text_files(self.path)
        text = "\n".join(part for _, part in parts)
        split = int(len(text) * (1 - self.val_fraction))
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        settings = (
            f"{self.tokenizer}{self.vocab_size if self.tokenizer == 'bpe' else ''}-val{self.val_fraction}"
        )
        if self.vocab_json is not None:
            settings += "-given" + hashlib.sha256(self.vocab_json.encode()).hexdigest()[:12]
        folder = self.cache_dir / "text" / f"{digest}-{settings}"
        if (folder / "val.npy").is_file():
            self.vocab = vocab_from_json((folder / "vocab.json").read_text(encoding="utf-8"))
            rank_zero_info(f"Reusing tokenised corpus cached in {folder}")
        else:
            train_text, val_text = text[:split], text[split:]
            if self.vocab_json is not None:
                self.vocab = vocab_from_json(self.vocab_json)
            else:
                # Char ids come from the whole corpus: sorted, so a corpus whose validation split adds
                # no character keeps the ids the training split alone gave.
                source = text if self.tokenizer == "char" else train_text
                self.vocab = train_vocab(self.tokenizer, source, self.vocab_size)
            train_ids = self._encode(parts, train_text, 0, "training")
            val_ids = self._encode(parts, val_text, split, "validation")
            self._write_cache(folder, train_ids, val_ids)
        # Copy-on-write maps: torch can wrap them without a copy, and nothing is ever written back.
        self.train_ids = np.load(folder / "train.npy", mmap_mode="c")
        self.val_ids = np.load(folder / "val.npy", mmap_mode="c")

    def _encode(self, parts: list[tuple[Path, str]], text: str, offset: int, split: str) -> np.ndarray:
        """Ids of one split (``offset``: its start in the corpus). A character a given vocabulary
        (``data.vocab_json``) lacks is named with its file, line and split."""
        try:
            return self.vocab.encode(text)
        except UnknownCharacterError as err:
            file, line = locate(parts, offset + err.index)
            raise ValueError(
                f"{file}:{line} ({split} split): character {err.char!r} (U+{ord(err.char):04X}) is not in "
                f"the char vocabulary of data.vocab_json ({self.vocab.size} characters); use a corpus "
                "written in its characters, or leave data.vocab_json unset to build one from this corpus"
            ) from None

    def _write_cache(self, folder: Path, train_ids: np.ndarray, val_ids: np.ndarray) -> None:
        """Write ids and vocabulary to a temporary folder, then rename it into place (atomic)."""
        dtype = np.int16 if self.vocab.size < 2**15 else np.int32
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
        tmp.mkdir(exist_ok=True)
        np.save(tmp / "train.npy", train_ids.astype(dtype))
        np.save(tmp / "val.npy", val_ids.astype(dtype))
        (tmp / "vocab.json").write_text(self.vocab.to_json(), encoding="utf-8")
        try:
            tmp.rename(folder)
        except OSError:  # another process cached the same corpus first
            for file in tmp.iterdir():
                file.unlink()
            tmp.rmdir()

    def spec(self) -> dict:
        """Sizes the model is built from (``data_spec`` in the config): the vocabulary size."""
        return {"vocab_size": self.vocab.size}

    def artifacts(self) -> dict[str, str]:
        """Files a checkpoint must carry to reuse this data's encoding: the vocabulary JSON."""
        return {"vocab.json": self.vocab.to_json()}

    def train_dataloader(self) -> WindowLoader:
        """Endless random windows, ranks interleaved; the position to start from is the loader's
        state (a fresh loader starts at batch 0)."""
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        windows = RandomWindows(
            self.train_ids, self.block_size, self.batch_size, self.seed, rank, stride=world
        )
        return WindowLoader(windows, rank, world, self.num_workers, pin_memory=torch.cuda.is_available())

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            ContiguousWindows(self.val_ids, self.block_size),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
        )
