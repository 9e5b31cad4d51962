"""Text vocabularies: byte-level BPE (HF ``tokenizers``) and characters, saved as JSON.

A vocabulary maps strings to integer ids and back. BPE merges are learnt from the training split;
a char vocabulary lists every character of the corpus (a character met only in validation must
have an id too). It is saved beside the run (and inside checkpoints) and reused by generation, so
ids always mean the same thing. Byte-level BPE (Radford et al. 2019, GPT-2) round-trips any Unicode
text exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

VocabKind = Literal["bpe", "char"]
# Encoding a large corpus in pieces lets HF tokenizers use all cores. Pieces end after a newline,
# where pre-tokenization splits anyway, so at most a run of blank lines is cut differently; decoding
# the concatenated ids gives back the exact text.
_CHUNK_CHARS = 1 << 16


class Vocabulary(Protocol):
    """What the data module, the LM task and generation need from a vocabulary."""

    kind: str

    @property
    def size(self) -> int: ...

    def encode(self, text: str) -> np.ndarray: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def to_json(self) -> str: ...


class UnknownCharacterError(ValueError):
    """A character the char vocabulary lacks: ``char``, at ``index`` of the text being encoded."""

    def __init__(self, char: str, index: int) -> None:
        super().__init__(f"character {char!r} is not in the char vocabulary (trained on other text)")
        self.char, self.index = char, index


class CharVocab:
    """One id per distinct character of a corpus, in sorted order (nanoGPT's ``shakespeare_char``)."""

    kind = "char"

    def __init__(self, chars: Iterable[str]) -> None:
        self.chars = sorted(set(chars))
        if not self.chars:
            raise ValueError("a char vocabulary needs at least one character")
        self._index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def train(cls, text: str) -> CharVocab:
        """Build the vocabulary of every character in ``text``."""
        return cls(text)

    @property
    def size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        try:
            return np.fromiter((self._index[c] for c in text), dtype=np.int64, count=len(text))
        except KeyError as err:
            raise UnknownCharacterError(err.args[0], text.index(err.args[0])) from None

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def to_json(self) -> str:
        return json.dumps({"omniformer_vocab": "char", "chars": self.chars}, ensure_ascii=False)


class BPEVocab:
    """Byte-level BPE trained with HF ``tokenizers``; any Unicode text round-trips exactly."""

    kind = "bpe"

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    @classmethod
    def train(cls, text: str, vocab_size: int) -> BPEVocab:
        """Learn ``vocab_size`` ids (256 byte ids plus merges) from ``text``."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        if vocab_size < 257:
            raise ValueError(f"vocab_size={vocab_size} is too small for byte-level BPE (needs > 256)")
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator(_chunks(text), trainer=trainer)
        return cls(tokenizer)

    @property
    def size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> np.ndarray:
        encoded = self.tokenizer.encode_batch(list(_chunks(text)), add_special_tokens=False)
        if not encoded:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.asarray(e.ids, dtype=np.int64) for e in encoded])

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def to_json(self) -> str:
        return json.dumps({"omniformer_vocab": "bpe", "tokenizer": self.tokenizer.to_str()})


def _chunks(text: str) -> Iterable[str]:
    """Split ``text`` into pieces of about ``_CHUNK_CHARS`` characters, each ending after a newline."""
    start = 0
    while start < len(text):
        end = text.find("\n", start + _CHUNK_CHARS)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


def train_vocab(kind: VocabKind, text: str, vocab_size: int) -> Vocabulary:
    """Train a vocabulary of ``kind`` ("bpe" or "char") on ``text``."""
    if kind == "bpe":
        return BPEVocab.train(text, vocab_size)
    if kind == "char":
        return CharVocab.train(text)
    raise ValueError(f"tokenizer={kind!r} is not a text tokenizer; choose 'bpe' or 'char'")


def vocab_from_json(payload: str) -> Vocabulary:
    """Rebuild a vocabulary from :meth:`to_json` output."""
    from tokenizers import Tokenizer

    data = json.loads(payload)
    kind = data.get("omniformer_vocab") if isinstance(data, dict) else None
    if kind == "char":
        return CharVocab(data["chars"])
    if kind == "bpe":
        return BPEVocab(Tokenizer.from_str(data["tokenizer"]))
    raise ValueError("not an omniformer vocabulary (missing 'omniformer_vocab': 'bpe' | 'char')")


def load_vocab(path: str | Path) -> Vocabulary:
    """Read a vocabulary saved with :meth:`to_json`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"vocabulary file {path} does not exist")
    try:
        return vocab_from_json(path.read_text(encoding="utf-8"))
    except (ValueError, KeyError) as err:
        raise ValueError(f"{path}: {err}") from err
