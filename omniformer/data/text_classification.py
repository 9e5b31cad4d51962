"""Text classification data: a folder per class of ``.txt`` files, or a CSV / JSONL of text + label.

Three on-disk layouts are read:

* ``folder``: ``<path>/<class>/*.txt``, one document per file (the movie-review polarity corpus of
  Pang & Lee 2004, as NLTK distributes it: ``movie_reviews/{pos,neg}/*.txt``);
* ``csv``: a header row and one document per row; ``text_key`` and ``label_key`` name the columns;
* ``jsonl``: one JSON object per line; ``text_key`` and ``label_key`` name the keys.

Documents are split once into train / validation / test, stratified by class and seeded by
``split_seed`` alone (the split never changes with the run's seed). A byte-level BPE vocabulary
(:mod:`omniformer.tokenizers.vocab`) is trained on the training documents only, so no validation or
test text leaks into it. Each document is encoded once, cropped to ``max_length`` tokens and batched
right-padded as ``(ids, lengths, labels)``; the text tokenizer turns ``lengths`` into a key-padding
mask, so padding is never attended to nor pooled.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from omniformer.tokenizers.vocab import Vocabulary, train_vocab, vocab_from_json

FormatKind = Literal["auto", "folder", "csv", "jsonl"]
KeepKind = Literal["head", "tail"]
CropKind = Literal["random", "same"]
CLASSES_FILE = "classes.json"
VOCAB_FILE = "vocab.json"


def _decode(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path} is not valid UTF-8: byte offset {err.start} ({raw[err.start : err.start + 1]!r})"
        ) from None


def read_folder(path: Path) -> list[tuple[str, str]]:
    """``(text, class name)`` for every ``<path>/<class>/*.txt`` file (classes and files sorted)."""
    classes = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise FileNotFoundError(
            f"data.path: {path} has no class sub-folders (one folder of .txt files per class)"
        )
    items = []
    for folder in classes:
        files = sorted(f for f in folder.rglob("*.txt") if f.is_file())
        if not files:
            raise FileNotFoundError(f"class folder {folder} holds no .txt files")
        items += [(_decode(f.read_bytes(), f), folder.name) for f in files]
    return items


def read_table(
    path: Path, kind: Literal["csv", "jsonl"], text_key: str, label_key: str
) -> list[tuple[str, str]]:
    """``(text, label)`` rows of a CSV (with a header) or JSONL file; one error naming file, line and key.

    A record ends only at a newline (CSV: ``\\n``, ``\\r\\n`` or ``\\r`` outside quotes; JSONL: ``\\n`` or
    ``\\r\\n``): U+2028, U+0085, form feeds and the other breaks ``str.splitlines`` knows are ordinary
    characters of a field. Line numbers in errors are physical lines of the file, where the record
    starts (a CSV record with a quoted newline spans several lines).
    """
    text = _decode(path.read_bytes(), path)
    read = _read_csv if kind == "csv" else _read_jsonl
    items = read(path, text, text_key, label_key)
    if not items:
        raise ValueError(f"{path} holds no rows")
    return items


def _read_csv(path: Path, text: str, text_key: str, label_key: str) -> list[tuple[str, str]]:
    # StringIO(newline="") splits lines as a file opened with newline="" does, as the csv module wants.
    reader = csv.reader(io.StringIO(text, newline=""))
    columns: list[str] | None = None
    items: list[tuple[str, str]] = []
    while True:
        start = reader.line_num + 1  # line_num: physical lines read so far
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise ValueError(f"{path}:{start}: not valid CSV ({err})") from None
        if not record:  # a blank line, skipped as csv.DictReader skips it
            continue
        if columns is None:
            columns = _check_columns(record, path, text_key, label_key)
            continue
        row = dict(zip(columns, record))  # like DictReader: a short row lacks its last keys
        items.append(_row(row.get(text_key), row.get(label_key), path, start, text_key, label_key))
    if columns is None:  # no header either
        _check_columns([], path, text_key, label_key)
    return items


def _check_columns(columns: list[str], path: Path, text_key: str, label_key: str) -> list[str]:
    for key, name in ((text_key, "data.text_key"), (label_key, "data.label_key")):
        if key not in columns:
            raise ValueError(f"{name}={key!r}: {path} has no such column (columns: {columns})")
    return columns


def _read_jsonl(path: Path, text: str, text_key: str, label_key: str) -> list[tuple[str, str]]:
    items = []
    for line, raw in enumerate(text.split("\n"), start=1):
        raw = raw.removesuffix("\r")
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{line} is not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{line} is not a JSON object")
        for key, name in ((text_key, "data.text_key"), (label_key, "data.label_key")):
            if key not in row:
                raise ValueError(f"{name}={key!r}: {path}:{line} has no such key (keys: {sorted(row)})")
        items.append(_row(row[text_key], row[label_key], path, line, text_key, label_key))
    return items


def _row(text, label, path: Path, line: int, text_key: str, label_key: str) -> tuple[str, str]:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{path}:{line}: empty or non-text {text_key!r}")
    if label is None or isinstance(label, (list, dict)) or str(label).strip() == "":
        raise ValueError(f"{path}:{line}: missing or non-scalar {label_key!r} ({label!r})")
    return text, str(label).strip()


def sort_classes(labels: Sequence[str]) -> list[str]:
    """Distinct labels in a stable order: numerically when every label is an integer, else by name."""
    distinct = set(labels)
    if all(label.lstrip("-").isdigit() for label in distinct):
        return sorted(distinct, key=int)
    return sorted(distinct)


def stratified_split(
    labels: Sequence[int], val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[int], list[int], list[int]]:
    """Deterministic ``(train, val, test)`` index lists, each class split in the same proportions."""
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    rng = random.Random(seed)
    train, val, test = [], [], []
    for label in sorted(by_class):
        members = by_class[label]
        rng.shuffle(members)
        n_val, n_test = round(len(members) * val_fraction), round(len(members) * test_fraction)
        if len(members) - n_val - n_test < 1:
            raise ValueError(
                f"class {label} has {len(members)} document(s): too few for data.val_fraction={val_fraction} "
                f"and data.test_fraction={test_fraction}"
            )
        val += members[:n_val]
        test += members[n_val : n_val + n_test]
        train += members[n_val + n_test :]
    return sorted(train), sorted(val), sorted(test)


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


def pad_batch(items: Sequence[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad id sequences with 0 to the batch's longest: ``(ids B×N, lengths B, labels B)``."""
    lengths = torch.tensor([len(ids) for ids, _ in items], dtype=torch.long)
    out = torch.zeros(len(items), int(lengths.max()), dtype=torch.long)
    for row, (ids, _) in enumerate(items):
        out[row, : len(ids)] = ids
    return out, lengths, torch.tensor([label for _, label in items], dtype=torch.long)


class TextClassificationDataModule(L.LightningDataModule):
    """Labelled documents from a class-folder tree, a CSV or a JSONL file, as padded BPE id batches.

    Args:
        path: a folder of class sub-folders of ``.txt`` files, or a ``.csv`` / ``.jsonl`` file.
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
    """

    def __init__(
        self,
        path: str,
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
    ) -> None:
        super().__init__()
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
        self.path = Path(path).expanduser()
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
        """Every ``(text, label name)`` of the dataset, in a deterministic order."""
        if not self.path.exists():
            raise FileNotFoundError(f"data.path: {self.path} does not exist")
        kind = self.resolved_format()
        if kind == "folder":
            if not self.path.is_dir():
                raise NotADirectoryError(f"data.path: {self.path} is not a folder (data.format=folder)")
            return read_folder(self.path)
        if not self.path.is_file():
            raise FileNotFoundError(f"data.path: {self.path} is not a file (data.format={kind})")
        return read_table(self.path, kind, self.text_key, self.label_key)

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
        items = self.read()
        found = sort_classes([label for _, label in items])
        if self.classes is None:
            self.classes = found
        unknown = sorted(set(found) - set(self.classes))
        if unknown:
            raise ValueError(
                f"{self.path} has labels {unknown[:10]} that are not in data.classes={self.classes} "
                "(or in the checkpoint's classes)"
            )
        if len(self.classes) < 2:
            raise ValueError(
                f"{self.path} has {len(self.classes)} class(es) ({self.classes}); need at least 2"
            )
        index = {name: i for i, name in enumerate(self.classes)}
        labels = [index[label] for _, label in items]
        train, val, test = stratified_split(labels, self.val_fraction, self.test_fraction, self.split_seed)
        if not val or not test:
            raise ValueError(
                f"{self.path}: {len(items)} documents leave an empty validation or test split with "
                f"data.val_fraction={self.val_fraction}, data.test_fraction={self.test_fraction}"
            )
        if self.vocab is None:
            corpus = "\n".join(self._prepare(items[i][0]) for i in train)
            self.vocab = train_vocab("bpe", corpus, self.vocab_size)

        def subset(indices: list[int], crop: CropKind) -> EncodedDocuments:
            ids = [self.encode(items[i][0]) for i in indices]
            return EncodedDocuments(ids, [labels[i] for i in indices], self.max_length, self.keep, crop)

        self.train_set = subset(train, self.train_crop)
        self.val_set = subset(val, "same")
        self.test_set = subset(test, "same")
        lengths = torch.tensor([len(ids) for ids in self.train_set.ids], dtype=torch.float)
        rank_zero_info(
            f"text classification ({self.path.name}): {len(train)} train / {len(val)} val / {len(test)} test "
            f"documents, {len(self.classes)} classes, BPE vocabulary {self.vocab.size}, median "
            f"{int(lengths.median())} tokens per training document (cropped to {self.max_length})"
        )

    def spec(self) -> dict:
        """Sizes the model is built from: vocabulary size, classes, class names, the longest input."""
        if self.vocab is None or self.classes is None:
            raise RuntimeError("spec() needs setup() first: the vocabulary comes from the training split")
        return {
            "vocab_size": self.vocab.size,
            "num_classes": len(self.classes),
            "class_names": list(self.classes),
            "max_length": self.max_length,
        }

    def artifacts(self) -> dict[str, str]:
        """``vocab.json`` (the BPE vocabulary) and ``classes.json`` (class names in label order)."""
        if self.vocab is None or self.classes is None:
            raise RuntimeError("artifacts() needs setup() first")
        return {VOCAB_FILE: self.vocab.to_json(), CLASSES_FILE: json.dumps(self.classes)}

    def use_artifacts(self, artifacts: Mapping[str, str]) -> None:
        """Take back the vocabulary and class order a checkpoint was trained with (before ``setup``)."""
        if VOCAB_FILE in artifacts:
            self.vocab = vocab_from_json(artifacts[VOCAB_FILE])
        if CLASSES_FILE in artifacts:
            classes = json.loads(artifacts[CLASSES_FILE])
            if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
                raise ValueError(f"{CLASSES_FILE} must hold a JSON list of class names")
            self.classes = classes

    def load_inputs(self, paths: Sequence[str | Path]) -> tuple[torch.Tensor, torch.Tensor]:
        """Read UTF-8 text files into one ``(ids, lengths)`` batch, cropped as for evaluation."""
        if not paths:
            raise ValueError("no input text files given")
        items = []
        for path in paths:
            path = Path(path)
            if not path.is_file():
                raise FileNotFoundError(f"text file {path} does not exist")
            ids = self.encode(_decode(path.read_bytes(), path))
            if len(ids) > self.max_length:
                ids = ids[: self.max_length] if self.keep == "head" else ids[-self.max_length :]
            items.append((ids, 0))
        ids, lengths, _ = pad_batch(items)
        return ids, lengths

    def _loader(self, dataset: Dataset | None, split: str, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"no {split} split: call setup() first")
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            collate_fn=pad_batch,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),  # page-locked: faster host→GPU copies
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, "train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, "validation", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, "test", train=False)
