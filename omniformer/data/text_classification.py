"""Text classification data: a folder per class of ``.txt`` files, or a CSV / JSONL of text + label.

Three on-disk layouts are read:

* ``folder``: ``<path>/<class>/*.txt``, one document per file (the movie-review polarity corpus of
  Pang & Lee 2004, as NLTK distributes it: ``movie_reviews/{pos,neg}/*.txt``), or, as image and
  audio folders, ``<path>/train/<class>/*.txt`` with optional ``val/`` and ``test/`` beside it (whole
  authors or sources held out);
* ``csv``: a header row and one document per row; ``text_key`` and ``label_key`` name the columns;
* ``jsonl``: one JSON object per line; ``text_key`` and ``label_key`` name the keys
  (readers: :mod:`omniformer.data.labelled_text`).

Documents are split once into train / validation / test, stratified by class and seeded by
``split_seed`` alone (the split never changes with the run's seed); a split with its own folder is
read from it, and the others are held out of the training documents. A byte-level BPE vocabulary
(:mod:`omniformer.tokenizers.vocab`) is trained on the training documents only, so no validation or
test text leaks into it. Each document is encoded once, cropped to ``max_length`` tokens and batched
right-padded as ``(ids, lengths, labels)``; the text tokenizer turns ``lengths`` into a key-padding
mask, so padding is never attended to nor pooled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from omniformer.data.classification import ClassificationDataModule
from omniformer.data.collate import pad_batch
from omniformer.data.labelled_text import decode, read_folder, read_table, sort_classes
from omniformer.data.locations import data_location, missing_hint
from omniformer.data.splits import split_folders, stratified_split
from omniformer.tokenizers.vocab import Vocabulary, train_vocab, vocab_from_json

FormatKind = Literal["auto", "folder", "csv", "jsonl"]
KeepKind = Literal["head", "tail"]
CropKind = Literal["random", "same"]
VOCAB_FILE = "vocab.json"


class EncodedDocuments(Dataset):
    """Encoded documents cropped to ``max_length`` ids: ``(ids, label)`` per item.

    ``crop="random"`` takes a random window of ``max_length`` ids from a longer document each time
    it is read (augmentation for training); otherwise ``keep`` decides which end is kept.
    """

    def __init__(
        self, ids: list[torch.Tensor], labels: list[int], max_length: int, keep: KeepKind, crop: CropKind
    ) -> None:
        self.ids, self.labels, self.max_length, self.keep, self.crop = ids, labels, max_length, keep, crop

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        ids, n = self.ids[index], self.max_length
        if len(ids) > n:
            if self.crop == "random":
                start = int(torch.randint(len(ids) - n + 1, ()))
            else:
                start = 0 if self.keep == "head" else len(ids) - n
            ids = ids[start : start + n]
        return ids, self.labels[index]


class TextClassificationDataModule(ClassificationDataModule):
    """Labelled documents from a class-folder tree, a CSV or a JSONL file, as padded BPE id batches.

    Args:
        path: a folder of class sub-folders of ``.txt`` files (or of ``train/``, ``val/``, ``test/``
            split folders of them), or a ``.csv`` / ``.jsonl`` file; relative to ``root`` when given.
        format: ``auto`` (folder → ``folder``, ``*.csv`` → ``csv``, ``*.jsonl``/``*.json`` → ``jsonl``),
            or one of ``folder``, ``csv``, ``jsonl``.
        text_key: CSV column / JSON key holding the document text.
        label_key: CSV column / JSON key holding the label.
        classes: the class names in label order; ``None`` = every label found, sorted (numerically
            when all labels are integers).
        vocab_size: byte-level BPE vocabulary size, trained on the training documents.
        max_length: the most ids one document gives; longer ones are cropped.
        keep: which end of a long document validation / test / prediction keep: ``head`` or ``tail``.
        train_crop: ``random`` (a fresh random window of a long training document each epoch) or
            ``same`` (the same crop as evaluation).
        lowercase: lowercase every document before encoding.
        batch_size: training documents per batch.
        eval_batch_size: documents per validation / test batch (default: ``batch_size``).
        val_fraction: share of each class held out for validation.
        test_fraction: share of each class held out for testing (both fractions must be positive).
        split_seed: seed of the split (fixed: the split does not change with the run's seed).
        num_workers: loader worker processes (batching encoded ids is cheap: 0 is usually best).
        root: the data folder ``path`` is relative to (``paths.data_dir`` in the configs); with no
            ``path``, ``root`` itself is read.
    """

    def __init__(
        self,
        path: str | None = None,
        format: FormatKind = "auto",
        text_key: str = "text",
        label_key: str = "label",
        classes: list[str] | None = None,
        vocab_size: int = 4096,
        max_length: int = 256,
        keep: KeepKind = "head",
        train_crop: CropKind = "random",
        lowercase: bool = False,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        num_workers: int = 0,
        root: str | None = None,
    ) -> None:
        super().__init__()
        location = data_location(root, path)
        if location is None:
            raise ValueError("data.path (or data.root) must name the labelled documents: a folder or a file")
        if format not in ("auto", "folder", "csv", "jsonl"):
            raise ValueError(f"data.format={format!r}; choose 'auto', 'folder', 'csv' or 'jsonl'")
        if keep not in ("head", "tail"):
            raise ValueError(f"data.keep={keep!r}; choose 'head' or 'tail'")
        if train_crop not in ("random", "same"):
            raise ValueError(f"data.train_crop={train_crop!r}; choose 'random' or 'same'")
        if max_length < 1:
            raise ValueError(f"data.max_length must be >= 1, got {max_length}")
        if batch_size < 1 or (eval_batch_size is not None and eval_batch_size < 1):
            raise ValueError(f"data.batch_size and data.eval_batch_size must be >= 1, got {batch_size}")
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ValueError(
                f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must be in [0, 1) "
                "and leave documents to train on"
            )
        if val_fraction == 0 or test_fraction == 0:
            raise ValueError(
                f"data.val_fraction={val_fraction}, data.test_fraction={test_fraction}: both splits are "
                "needed (validation picks the best checkpoint, the test split reports its accuracy)"
            )
        self.path = location
        self.format, self.text_key, self.label_key = format, text_key, label_key
        self.classes = list(classes) if classes is not None else None
        self.vocab_size, self.max_length, self.keep = vocab_size, max_length, keep
        self.train_crop, self.lowercase = train_crop, lowercase
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.num_workers = num_workers
        self.vocab: Vocabulary | None = None
        self.train_set: EncodedDocuments | None = None
        self.val_set: EncodedDocuments | None = None
        self.test_set: EncodedDocuments | None = None

    # -- reading ------------------------------------------------------------------------------------
    def resolved_format(self) -> str:
        """The layout ``path`` is read as (``folder``, ``csv`` or ``jsonl``)."""
        if self.format != "auto":
            return self.format
        if self.path.is_dir():
            return "folder"
        suffix = self.path.suffix.lower()
        if suffix == ".csv":
            return "csv"
        if suffix in (".jsonl", ".json", ".ndjson"):
            return "jsonl"
        raise ValueError(
            f"data.path={str(self.path)!r}: cannot tell the format from the name; set data.format to "
            "'folder', 'csv' or 'jsonl'"
        )

    def read(self) -> list[tuple[str, str]]:
        """Every ``(text, label name)`` of the dataset (every split folder's), in a deterministic order."""
        return [item for items in self.read_splits().values() for item in items]

    def read_splits(self) -> dict[str, list[tuple[str, str]]]:
        """``{"train": [(text, label name)...]}``, plus ``val`` / ``test`` when they have folders."""
        if not self.path.exists():
            raise FileNotFoundError(f"data.path: {self.path} does not exist; {missing_hint(self.path)}")
        kind = self.resolved_format()
        if kind == "folder":
            if not self.path.is_dir():
                raise NotADirectoryError(f"data.path: {self.path} is not a folder (data.format=folder)")
            folders = split_folders(self.path, "document.txt", "data.path") or {"train": self.path}
            return {split: read_folder(folder) for split, folder in folders.items()}
        if not self.path.is_file():
            raise FileNotFoundError(f"data.path: {self.path} is not a file (data.format={kind})")
        return {"train": read_table(self.path, kind, self.text_key, self.label_key)}

    def _prepare(self, text: str) -> str:
        return text.lower() if self.lowercase else text

    def encode(self, text: str) -> torch.Tensor:
        """Token ids of one document (uncropped); needs the vocabulary (``setup`` or ``use_artifacts``)."""
        if self.vocab is None:
            raise RuntimeError("the vocabulary is unknown until setup() or use_artifacts()")
        ids = torch.from_numpy(self.vocab.encode(self._prepare(text))).long()
        if len(ids) == 0:
            raise ValueError("a document encodes to no tokens (empty text)")
        return ids

    # -- Lightning ----------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Read, split (stratified, seeded), train the vocabulary on the training split, encode."""
        if self.train_set is not None:
            return
        named = self.read_splits()
        items = named["train"]
        found = sort_classes([label for _, label in items])
        if self.classes is None:
            self.classes = found
        for split, split_items in named.items():
            unknown = sorted({label for _, label in split_items} - set(self.classes))
            if unknown:
                where = f"{self.path}/{split}" if len(named) > 1 else str(self.path)
                raise ValueError(
                    f"{where} has labels {unknown[:10]} that are not in data.classes={self.classes} "
                    "(or in the checkpoint's classes, or the training split's)"
                )
        if len(self.classes) < 2:
            raise ValueError(
                f"{self.path} has {len(self.classes)} class(es) ({self.classes}); need at least 2"
            )
        index = {name: i for i, name in enumerate(self.classes)}
        labels = [index[label] for _, label in items]
        # A split with its own folder takes nothing out of the training documents.
        val_fraction = 0.0 if "val" in named else self.val_fraction
        test_fraction = 0.0 if "test" in named else self.test_fraction
        train, val, test = stratified_split(labels, val_fraction, test_fraction, self.split_seed)
        docs = {
            "train": [(items[i][0], labels[i]) for i in train],
            "val": [(items[i][0], labels[i]) for i in val],
            "test": [(items[i][0], labels[i]) for i in test],
        }
        for split in ("val", "test"):
            if split in named:
                docs[split] = [(text, index[label]) for text, label in named[split]]
        if not docs["val"] or not docs["test"]:
            raise ValueError(
                f"{self.path}: {len(items)} documents leave an empty validation or test split with "
                f"data.val_fraction={self.val_fraction}, data.test_fraction={self.test_fraction}"
            )
        if self.vocab is None:
            corpus = "\n".join(self._prepare(text) for text, _ in docs["train"])
            self.vocab = train_vocab("bpe", corpus, self.vocab_size)

        def subset(split: str, crop: CropKind) -> EncodedDocuments:
            ids = [self.encode(text) for text, _ in docs[split]]
            return EncodedDocuments(
                ids, [label for _, label in docs[split]], self.max_length, self.keep, crop
            )

        self.train_set = subset("train", self.train_crop)
        self.val_set = subset("val", "same")
        self.test_set = subset("test", "same")
        train, val, test = docs["train"], docs["val"], docs["test"]
        layout = f", split folders {', '.join(named)}" if len(named) > 1 else ""
        lengths = torch.tensor([len(ids) for ids in self.train_set.ids], dtype=torch.float)
        rank_zero_info(
            f"text classification ({self.path.resolve()}{layout}): {len(train)} train / {len(val)} val / "
            f"{len(test)} test documents, {len(self.classes)} classes, BPE vocabulary {self.vocab.size}, "
            f"median {int(lengths.median())} tokens per training document (cropped to {self.max_length})"
        )

    def _vocab(self) -> Vocabulary:
        if self.vocab is None:
            raise RuntimeError("the vocabulary comes from the training split: call setup() first")
        return self.vocab

    def input_spec(self) -> dict:
        """The vocabulary size and the longest input (ids per document)."""
        return {"vocab_size": self._vocab().size, "max_length": self.max_length}

    def extra_artifacts(self) -> dict[str, str]:
        """``vocab.json``: the BPE vocabulary."""
        return {VOCAB_FILE: self._vocab().to_json()}

    def use_extra_artifacts(self, artifacts: Mapping[str, str]) -> None:
        """Take back the vocabulary a checkpoint was trained with (before ``setup``)."""
        if VOCAB_FILE in artifacts:
            self.vocab = vocab_from_json(artifacts[VOCAB_FILE])

    def load_inputs(self, paths: Sequence[str | Path]) -> tuple[torch.Tensor, torch.Tensor]:
        """Read UTF-8 text files into one ``(ids, lengths)`` batch, cropped as for evaluation."""
        if not paths:
            raise ValueError("no input text files given")
        items = []
        for path in paths:
            path = Path(path)
            if not path.is_file():
                raise FileNotFoundError(f"text file {path} does not exist")
            ids = self.encode(decode(path.read_bytes(), path))
            if len(ids) > self.max_length:
                ids = ids[: self.max_length] if self.keep == "head" else ids[-self.max_length :]
            items.append((ids, 0))
        ids, lengths, _ = pad_batch(items)
        return ids, lengths

    def loader(self, split: str, train: bool) -> DataLoader:
        # page-locked memory: faster host→GPU copies
        return self.split_loader(split, train, collate_fn=pad_batch, pin_memory=torch.cuda.is_available())
