"""Text corpora for language modelling: read, split, tokenise once, cache, sample windows.

The corpus is one UTF-8 file or a folder of ``.txt`` files, normalised (byte-order marks dropped,
CRLF → LF) and split into training and validation text by :mod:`omniformer.data.text_corpus`: for one
file the last ``val_fraction`` of its characters is validation (deterministic, like nanoGPT), for a
folder the last ``val_fraction`` of each file, or whole files (``data.split``). A BPE vocabulary is
trained on the training split; a char vocabulary holds every character of the whole corpus, sorted
(a character met only in the validation split needs an id too; for Tiny Shakespeare both splits give
the same 65 characters). Ids of both splits are cached as ``.npy`` files keyed by the text's
hash and the tokenizer and split settings, and memory-mapped on later runs.
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

from omniformer.data.locations import data_location
from omniformer.data.text_corpus import (
    Piece,
    SplitKind,
    check_split,
    joined,
    locate,
    normalise,
    read_text,
    read_text_files,
    resolve_split,
    split_corpus,
)
from omniformer.data.windows import ContiguousWindows, RandomWindows, WindowLoader
from omniformer.tokenizers.vocab import (
    UnknownCharacterError,
    VocabKind,
    Vocabulary,
    train_vocab,
    vocab_from_json,
)

BUNDLED_SHAKESPEARE = Path(__file__).parent / "assets" / "tinyshakespeare.txt"
__all__ = ["BUNDLED_SHAKESPEARE", "TextDataModule", "default_cache_dir", "read_text", "read_text_files"]


def default_cache_dir() -> Path:
    """Where tokenised corpora are cached: ``$OMNIFORMER_CACHE`` or ``~/.cache/omniformer``."""
    return Path(os.environ.get("OMNIFORMER_CACHE", Path.home() / ".cache" / "omniformer"))


class TextDataModule(L.LightningDataModule):
    """Language-modelling data from a UTF-8 file or folder (default: the bundled Tiny Shakespeare).

    Args:
        path: a text file or a folder of ``.txt`` files (under ``root`` when relative and ``root`` is
            given); ``None`` reads ``root`` itself, or the bundled Tiny Shakespeare without a ``root``.
        root: the data folder ``path`` is relative to (``paths.data_dir`` in the configs).
        tokenizer: ``"bpe"`` (byte-level BPE) or ``"char"``.
        vocab_size: BPE vocabulary size (ignored for ``char``).
        block_size: tokens of context per training window.
        batch_size: windows per batch.
        val_fraction: share of the text used for validation (its end, or each file's end, or the
            share of files held out; see ``split``).
        split: ``tail`` (the end of the corpus), ``per_file`` (the end of each file), ``files``
            (whole files held out) or ``auto`` (``per_file`` for a folder, ``tail`` for a file).
        val_files: with ``split=files``, the files held out (names or paths relative to the folder);
            ``None`` picks ``val_fraction`` of them by the hash of their names.
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
        root: str | None = None,
        split: SplitKind = "auto",
        val_files: list[str] | None = None,
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
        self.path = data_location(root, path, "data.path") or BUNDLED_SHAKESPEARE
        check_split(split, val_files)
        self.split = split
        self.val_files = list(val_files) if val_files else None
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
        parts, changed = normalise(read_text_files(self.path))
        how = resolve_split(self.split, self.path)
        pieces = split_corpus(parts, how, self.val_fraction, self.val_files, self.path)
        text = "\n".join(part for _, part in parts)
        train_text, val_text = joined(pieces["train"]), joined(pieces["val"])
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        settings = (
            f"{self.tokenizer}{self.vocab_size if self.tokenizer == 'bpe' else ''}-val{self.val_fraction}"
        )
        if how != "tail":  # the tail split keeps the key it always had
            held = (
                ",".join(p.file.relative_to(self.path).as_posix() for p in pieces["val"])
                if how == "files"
                else ""
            )
            settings += f"-{how}" + (hashlib.sha256(held.encode()).hexdigest()[:8] if held else "")
        if self.vocab_json is not None:
            settings += "-given" + hashlib.sha256(self.vocab_json.encode()).hexdigest()[:12]
        folder = self.cache_dir / "text" / f"{digest}-{settings}"
        if (folder / "val.npy").is_file():
            self.vocab = vocab_from_json((folder / "vocab.json").read_text(encoding="utf-8"))
            rank_zero_info(f"Reusing tokenised corpus cached in {folder}")
        else:
            if self.vocab_json is not None:
                self.vocab = vocab_from_json(self.vocab_json)
            else:
                # Char ids come from the whole corpus: sorted, so a corpus whose validation split adds
                # no character keeps the ids the training split alone gave.
                source = text if self.tokenizer == "char" else train_text
                self.vocab = train_vocab(self.tokenizer, source, self.vocab_size)
            train_ids = self._encode(pieces["train"], train_text, "training")
            val_ids = self._encode(pieces["val"], val_text, "validation")
            self._write_cache(folder, train_ids, val_ids)
        # Copy-on-write maps: torch can wrap them without a copy, and nothing is ever written back.
        self.train_ids = np.load(folder / "train.npy", mmap_mode="c")
        self.val_ids = np.load(folder / "val.npy", mmap_mode="c")
        self._log_corpus(parts, how, changed.describe(), (train_text, val_text))

    def _log_corpus(self, parts: list, how: str, changed: str | None, texts: tuple[str, str]) -> None:
        """Which corpus, how many files, characters and tokens per split, and what was normalised."""
        if changed:
            rank_zero_info(changed)
        name = "bundled Tiny Shakespeare" if self.path == BUNDLED_SHAKESPEARE else str(self.path.resolve())
        rule = {
            "tail": f"the last {self.val_fraction:.0%} of the text",
            "per_file": f"the last {self.val_fraction:.0%} of each file",
            "files": "whole files held out",
        }[how]
        rank_zero_info(
            f"text corpus {name}: {len(parts)} file(s); validation is {rule} (data.split={how}); "
            f"train {len(texts[0]):,} characters / {len(self.train_ids):,} {self.tokenizer} tokens, "
            f"val {len(texts[1]):,} characters / {len(self.val_ids):,} tokens"
        )

    def _encode(self, pieces: list[Piece], text: str, split: str) -> np.ndarray:
        """Ids of one split (``text``: its ``pieces`` joined). A character a given vocabulary
        (``data.vocab_json``) lacks is named with its file, line and split."""
        try:
            return self.vocab.encode(text)
        except UnknownCharacterError as err:
            file, line = locate(pieces, err.index)
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
