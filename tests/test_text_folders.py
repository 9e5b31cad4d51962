"""Folders of text (issue #17): a language-model corpus split per file or by whole files, normalised
(BOM, CRLF) and logged; labelled-text folders with train/ val/ test/ split folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import omniformer.data.text as text_module
from omniformer.data.text import BUNDLED_SHAKESPEARE, TextDataModule
from omniformer.data.text_classification import TextClassificationDataModule
from omniformer.data.text_corpus import normalise, read_text_files, split_corpus
from tests.helpers.data import REVIEWS
from tests.helpers.data import fixture_reviews as reviews

BOOKS = {"a.txt": "alpha " * 50, "b.txt": "bravo " * 30, "sub/c.txt": "charlie " * 20}


def books(root: Path, texts: dict[str, str] = BOOKS) -> Path:
    for name, text in texts.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def lm(path: Path, tmp_path: Path, **kwargs) -> TextDataModule:
    options = {"tokenizer": "char", "block_size": 4, "cache_dir": str(tmp_path / "cache")}
    return TextDataModule(path=str(path), **{**options, **kwargs})


def test_a_folder_holds_out_the_end_of_each_file_by_default(tmp_path, monkeypatch):
    said: list[str] = []
    monkeypatch.setattr(text_module, "rank_zero_info", said.append)
    root = books(tmp_path / "books")
    dm = lm(root, tmp_path)
    dm.setup()
    texts = [BOOKS[n] for n in ("a.txt", "b.txt", "sub/c.txt")]
    cuts = [int(len(t) * 0.9) for t in texts]
    assert dm.vocab.decode(dm.val_ids) == "\n".join(t[c:] for t, c in zip(texts, cuts))
    assert dm.vocab.decode(dm.train_ids) == "\n".join(t[:c] for t, c in zip(texts, cuts))
    line = said[-1]
    assert f"text corpus {root.resolve()}: 3 file(s)" in line and "the last 10% of each file" in line
    assert (
        f"train {len(dm.vocab.decode(dm.train_ids)):,} characters / {len(dm.train_ids):,} char tokens" in line
    )


def test_whole_files_can_be_held_out(tmp_path):
    root = books(tmp_path / "books")
    dm = lm(root, tmp_path, split="files", val_files=["b.txt"])
    dm.setup()
    assert dm.vocab.decode(dm.val_ids) == BOOKS["b.txt"]
    assert dm.vocab.decode(dm.train_ids) == BOOKS["a.txt"] + "\n" + BOOKS["sub/c.txt"]
    named = lm(root, tmp_path, split="files", val_files=["sub/c.txt"])
    named.setup()
    assert named.vocab.decode(named.val_ids) == BOOKS["sub/c.txt"]
    chosen = lm(root, tmp_path, split="files", val_fraction=0.3)  # round(3 · 0.3) = 1 file, by name hash
    chosen.setup()
    assert chosen.vocab.decode(chosen.val_ids) in BOOKS.values()
    again = lm(root, tmp_path / "other", split="files", val_fraction=0.3, seed=7)
    again.setup()
    assert list(again.val_ids) == list(chosen.val_ids)  # not a function of the run's seed


def test_bad_split_settings_are_named(tmp_path):
    root = books(tmp_path / "books")
    with pytest.raises(ValueError, match=r"data\.val_files names \['moby\.txt'\], which are not \.txt files"):
        lm(root, tmp_path, split="files", val_files=["moby.txt"]).setup()
    with pytest.raises(ValueError, match=r"holds out every file"):
        lm(root, tmp_path, split="files", val_files=["a.txt", "b.txt", "c.txt"]).setup()
    single = books(tmp_path / "one", {"only.txt": "text " * 40})
    with pytest.raises(
        ValueError, match=r"data\.split=files holds out whole files, but the corpus is one file"
    ):
        lm(single / "only.txt", tmp_path, split="files").setup()
    with pytest.raises(ValueError, match=r"data\.split='random'; choose auto, tail, per_file or files"):
        lm(root, tmp_path, split="random")
    with pytest.raises(
        ValueError, match=r"data\.val_files=\['a\.txt'\] holds out whole files: set data\.split=files"
    ):
        lm(root, tmp_path, val_files=["a.txt"])


def test_bom_and_crlf_are_normalised_and_counted(tmp_path, monkeypatch):
    said: list[str] = []
    monkeypatch.setattr(text_module, "rank_zero_info", said.append)
    root = tmp_path / "windows"
    root.mkdir()
    (root / "a.txt").write_bytes(("\ufeff" + "line one\r\nline two\r\n" * 5).encode())
    (root / "b.txt").write_bytes(b"unix\nonly\n" * 5)
    dm = lm(root, tmp_path)
    dm.setup()
    assert "\r" not in dm.vocab.chars and "\ufeff" not in dm.vocab.chars
    assert said[0] == (
        "text corpus: stripped the UTF-8 byte-order mark of 1 file(s) and turned 10 CRLF line ends into "
        "LF in 1 file(s)"
    )
    parts, changed = normalise(read_text_files(root))
    assert parts[0][1].startswith("line one\nline two\n") and changed.crlf == 10 and changed.boms == 1
    unix = lm(books(tmp_path / "unix", {"a.txt": "line one\nline two\n"}), tmp_path)
    said.clear()
    unix.setup()
    assert not any("byte-order" in line or "CRLF" in line for line in said)


def test_one_file_keeps_the_tail_split_and_its_cache_key(tmp_path, monkeypatch):
    """data=shakespeare and data=textfile on one file split exactly as before: the make-train figures
    and earlier caches stay valid."""
    said: list[str] = []
    monkeypatch.setattr(text_module, "rank_zero_info", said.append)
    dm = lm(BUNDLED_SHAKESPEARE, tmp_path)
    dm.setup()
    text = BUNDLED_SHAKESPEARE.read_text(encoding="utf-8")
    assert dm.vocab.decode(dm.val_ids) == text[int(len(text) * 0.9) :]
    (cached,) = (tmp_path / "cache" / "text").iterdir()
    assert cached.name.endswith("-char-val0.1")  # the key a one-file corpus always had
    assert said[-1].startswith("text corpus bundled Tiny Shakespeare: 1 file(s); validation is the last 10%")
    pieces = split_corpus([(Path("x"), "abcdefghij")], "tail", 0.2)
    assert [p.chars for p in pieces["train"]] == ["abcdefgh"] and [p.chars for p in pieces["val"]] == ["ij"]


def test_the_tail_split_of_a_folder_is_still_available(tmp_path):
    root = books(tmp_path / "books")
    dm = lm(root, tmp_path, split="tail")
    dm.setup()
    whole = "\n".join(BOOKS[n] for n in ("a.txt", "b.txt", "sub/c.txt"))
    assert dm.vocab.decode(dm.val_ids) == whole[int(len(whole) * 0.9) :]


def test_root_and_path_point_at_a_corpus(tmp_path):
    root = books(tmp_path / "data" / "books")
    relative = TextDataModule(root=str(tmp_path / "data"), path="books")
    assert relative.path == root
    assert TextDataModule(root=str(root)).path == root  # root alone is the corpus
    assert TextDataModule(root=str(tmp_path), path=str(root)).path == root  # an absolute path wins
    with pytest.raises(
        FileNotFoundError, match=r"nowhere does not exist; .*relative to the working directory"
    ):
        TextDataModule(path="nowhere").setup()


# -- labelled-text folders with split folders ------------------------------------------------------
def split_reviews(root: Path, layout: dict[str, dict[str, list[str]]]) -> Path:
    """``root/<split>/<class>/<file>``: the fixture's reviews placed as ``layout`` says."""
    for split, classes in layout.items():
        for label, names in classes.items():
            (root / split / label).mkdir(parents=True, exist_ok=True)
            for name in names:
                shutil.copy(REVIEWS / label / name, root / split / label / name)
    return root


POS = sorted(p.name for p in (REVIEWS / "pos").glob("*.txt"))
NEG = sorted(p.name for p in (REVIEWS / "neg").glob("*.txt"))


def test_a_test_folder_holds_whole_documents_out(tmp_path):
    layout = {"train": {"pos": POS[:2], "neg": NEG[:2]}, "test": {"pos": POS[2:], "neg": NEG[2:]}}
    root = split_reviews(tmp_path / "reviews", layout)
    dm = reviews(root, val_fraction=0.5)
    dm.setup()
    assert dm.classes == ["neg", "pos"]
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (2, 2, 2)  # val held out of train/
    assert sorted(dm.test_set.labels) == [0, 1]
    every = reviews(split_reviews(tmp_path / "all", {**layout, "val": {"pos": POS[:1]}}))
    every.setup()
    assert (len(every.train_set), len(every.val_set), len(every.test_set)) == (4, 1, 2)  # nothing held out
    assert every.val_set.labels == [1]  # "pos" keeps its training label alone in val/


def test_labelled_text_layout_errors_say_how_to_lay_it_out(tmp_path):
    named_train = tmp_path / "a"
    (named_train / "train").mkdir(parents=True)
    (named_train / "train" / "1.txt").write_text("a class literally named train")
    (named_train / "test").mkdir()
    (named_train / "test" / "2.txt").write_text("and one named test")
    with pytest.raises(
        ValueError, match=r"train holds files but no class folders, as if 'train' were a class: lay"
    ):
        reviews(named_train).setup()
    flat = tmp_path / "flat"
    shutil.copytree(REVIEWS, flat)
    shutil.copytree(REVIEWS / "pos", flat / "test")  # a class named test beside the real classes
    with pytest.raises(
        ValueError, match=r"has a 'test' folder but no 'train' folder: lay the data out as <data\.path>/train"
    ):
        reviews(flat).setup()
    unknown = split_reviews(tmp_path / "u", {"train": {"pos": POS, "neg": NEG}, "val": {"pos": POS[:1]}})
    shutil.copytree(unknown / "val" / "pos", unknown / "val" / "meh")
    with pytest.raises(ValueError, match=r"u/val has labels \['meh'\] that are not in data\.classes"):
        reviews(unknown).setup()


def test_a_text_classification_root_is_the_folder_path_is_under(tmp_path):
    shutil.copytree(REVIEWS, tmp_path / "movie_reviews")
    assert (
        TextClassificationDataModule(path="movie_reviews", root=str(tmp_path)).path
        == tmp_path / "movie_reviews"
    )
    assert (
        TextClassificationDataModule(root=str(tmp_path / "movie_reviews")).path == tmp_path / "movie_reviews"
    )
    with pytest.raises(ValueError, match=r"data\.path \(or data\.root\) must name"):
        TextClassificationDataModule()
    with pytest.raises(FileNotFoundError, match=r"relative to the working directory"):
        TextClassificationDataModule(path="missing_reviews").setup()
