"""Text vocabularies and the text data module: round trips, caching, windows, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omniformer.data.text import TextDataModule, read_text
from omniformer.data.windows import ContiguousWindows, RandomWindows, WindowLoader
from omniformer.tokenizers.vocab import BPEVocab, CharVocab, load_vocab, vocab_from_json
from tests.helpers.data import fixture_reviews
from tests.helpers.paths import SHARED_DATA, needs_shared_data
from tests.helpers.unicode_text import arbitrary_texts

SHAKESPEARE_HEAD = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n"
)


@pytest.fixture(scope="module")
def bpe() -> BPEVocab:
    return BPEVocab.train(SHAKESPEARE_HEAD * 20, vocab_size=300)


def test_bpe_round_trips_arbitrary_unicode(bpe):
    for text in arbitrary_texts(60):
        assert bpe.decode(bpe.encode(text)) == text, repr(text)


def test_char_vocab_round_trips_the_text_it_was_built_on():
    for text in arbitrary_texts(60, min_size=1, seed=1):
        vocab = CharVocab.train(text)
        ids = vocab.encode(text)
        assert ids.max() < vocab.size, repr(text)
        assert vocab.decode(ids) == text, repr(text)


def test_vocabularies_survive_json(bpe, tmp_path):
    for vocab in (bpe, CharVocab.train(SHAKESPEARE_HEAD)):
        path = tmp_path / f"{vocab.kind}.json"
        path.write_text(vocab.to_json(), encoding="utf-8")
        again = load_vocab(path)
        assert again.kind == vocab.kind and again.size == vocab.size
        np.testing.assert_array_equal(again.encode(SHAKESPEARE_HEAD), vocab.encode(SHAKESPEARE_HEAD))


def test_char_vocab_names_an_unknown_character():
    with pytest.raises(ValueError, match="'Z' is not in the char vocabulary"):
        CharVocab.train("abc").encode("abZ")


def test_a_foreign_json_is_not_a_vocabulary():
    with pytest.raises(ValueError, match="not an omniformer vocabulary"):
        vocab_from_json('{"hello": 1}')


def test_read_text_errors_name_the_culprit(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.txt does not exist"):
        read_text(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(ValueError, match=r"empty\.txt is empty"):
        read_text(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 ok".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt is not valid UTF-8: byte offset 3"):
        read_text(tmp_path / "latin1.txt")
    folder = tmp_path / "nothing"
    folder.mkdir()
    (folder / "notes.md").write_text("not a txt")
    with pytest.raises(FileNotFoundError, match=r"contains no \.txt files"):
        read_text(folder)


def test_read_text_joins_a_folder_in_sorted_order(tmp_path):
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "sub" / "c.txt").write_text("third")
    assert read_text(tmp_path) == "first\nsecond\nthird"


def test_random_windows_are_shifted_targets_and_a_function_of_seed_and_index():
    ids = np.arange(1000, dtype=np.int16)
    windows = RandomWindows(ids, block_size=16, batch_size=4, seed=7)
    x, y = windows.batch(3)
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.long
    torch.testing.assert_close(y[:, :-1], x[:, 1:])
    torch.testing.assert_close(windows.batch(3)[0], x)
    assert not torch.equal(windows.batch(4)[0], x)
    resumed = RandomWindows(ids, block_size=16, batch_size=4, seed=7, start=3)
    torch.testing.assert_close(next(iter(resumed))[0], x)


def test_ranks_and_workers_shard_batch_indices_without_overlap():
    ids = np.arange(1000, dtype=np.int16)
    single = RandomWindows(ids, block_size=8, batch_size=2, seed=3)
    expected = [single.batch(i)[0] for i in range(6)]
    # Two processes: rank r takes indices r, r+2, r+4... — together exactly the single-process batches.
    ranks = [iter(RandomWindows(ids, block_size=8, batch_size=2, seed=3, start=r, stride=2)) for r in (0, 1)]
    sharded = [next(ranks[i % 2])[0] for i in range(6)]
    for got, want in zip(sharded, expected):
        torch.testing.assert_close(got, want)
    # Two loader workers within one process keep the order.
    loader = torch.utils.data.DataLoader(single, batch_size=None, num_workers=2)
    for got, want in zip(loader, expected):
        torch.testing.assert_close(got[0], want)


def test_window_loader_state_is_the_batch_to_start_from():
    """The LM loader's position arrives as state (Lightning's state_dict / load_state_dict), never
    from the trainer; the batch Lightning's fetcher holds ahead of training is not counted."""
    ids = np.arange(1000, dtype=np.int16)
    single = RandomWindows(ids, block_size=8, batch_size=2, seed=3)
    loader = WindowLoader(RandomWindows(ids, block_size=8, batch_size=2, seed=3))
    assert loader.state_dict() == {"batches": 0}
    it = iter(loader)
    drawn = [next(it)[0] for _ in range(4)]  # 3 trained on, the 4th fetched ahead
    assert all(torch.equal(got, single.batch(i)[0]) for i, got in enumerate(drawn))
    assert loader.state_dict() == {"batches": 3}
    resumed = WindowLoader(RandomWindows(ids, block_size=8, batch_size=2, seed=3))
    resumed.load_state_dict(loader.state_dict())
    assert resumed.state_dict() == {"batches": 3}  # saved again before training: nothing is lost
    torch.testing.assert_close(next(iter(resumed))[0], single.batch(3)[0])
    # rank 1 of 2 resumed after 3 batches each: global batch 3·2 + 1, then every other one
    rank = WindowLoader(RandomWindows(ids, block_size=8, batch_size=2, seed=3), rank=1, world=2)
    rank.load_state_dict({"batches": 3})
    it = iter(rank)
    assert [torch.equal(next(it)[0], single.batch(i)[0]) for i in (7, 9)] == [True, True]
    with pytest.raises(ValueError, match=r"loader state \{'batches': -1\} is not"):
        rank.load_state_dict({"batches": -1})


def test_contiguous_windows_cover_every_target_once():
    ids = np.arange(101, dtype=np.int16)
    windows = ContiguousWindows(ids, block_size=10)
    targets = torch.cat([windows[i][1] for i in range(len(windows))])
    assert set(targets.tolist()) == set(range(1, 101))
    assert len(windows) == 10


def test_datamodule_splits_caches_and_reuses(tmp_path, caplog):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(SHAKESPEARE_HEAD * 30)
    dm = TextDataModule(
        path=str(corpus), tokenizer="char", block_size=8, batch_size=4, cache_dir=str(tmp_path / "c")
    )
    dm.setup()
    total = len(SHAKESPEARE_HEAD * 30)
    assert len(dm.train_ids) == int(total * 0.9) and len(dm.val_ids) == total - int(total * 0.9)
    assert dm.spec() == {"vocab_size": dm.vocab.size}
    cached = list((tmp_path / "c" / "text").iterdir())
    assert len(cached) == 1 and {p.name for p in cached[0].iterdir()} == {
        "train.npy",
        "val.npy",
        "vocab.json",
    }
    again = TextDataModule(
        path=str(corpus), tokenizer="char", block_size=8, batch_size=4, cache_dir=str(tmp_path / "c")
    )
    again.setup()
    assert isinstance(again.train_ids, np.memmap)
    np.testing.assert_array_equal(again.val_ids, dm.val_ids)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == y.shape == (4, 8)


def test_datamodule_with_a_given_vocabulary_uses_it(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("abcabc" * 50)
    given = CharVocab("abcxyz")
    dm = TextDataModule(
        path=str(corpus), tokenizer="char", vocab_json=given.to_json(), cache_dir=str(tmp_path)
    )
    dm.setup()
    assert dm.vocab.size == 6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tokenizer": "wordpiece"}, "data.tokenizer='wordpiece'"),
        ({"val_fraction": 1.5}, "data.val_fraction"),
        ({"block_size": 0}, "data.block_size"),
    ],
)
def test_bad_datamodule_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TextDataModule(**kwargs)


def test_block_size_larger_than_the_training_split_is_refused(tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("hello world, " * 3)
    dm = TextDataModule(path=str(corpus), tokenizer="char", block_size=64, cache_dir=str(tmp_path))
    dm.setup()
    with pytest.raises(ValueError, match=r"too few for data\.block_size=64"):
        dm.train_dataloader()


# -- the char vocabulary covers the whole corpus ----------------------------------------------------
def test_char_vocabulary_covers_a_character_only_the_validation_split_holds(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("abc abc\n" * 50 + "the end: Z!\n")  # 'Z', 't', ':' ... only in the last 10%
    dm = TextDataModule(path=str(corpus), tokenizer="char", block_size=8, cache_dir=str(tmp_path / "c"))
    dm.setup()
    text = corpus.read_text()
    assert dm.vocab.chars == sorted(set(text))
    assert dm.vocab.decode(dm.val_ids) == text[int(len(text) * 0.9) :]
    assert dm.vocab.decode(dm.train_ids) == text[: int(len(text) * 0.9)]


NANOGPT_SHAKESPEARE_CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@pytest.mark.parametrize(
    "path",
    [
        None,  # the bundled corpus
        pytest.param(
            str(SHARED_DATA / "tinyshakespeare" / "input.txt"),
            marks=needs_shared_data("tinyshakespeare", "input.txt"),
        ),
    ],
)
def test_shakespeare_char_vocabulary_is_unchanged(path, tmp_path):
    """Built from the whole corpus, it is still the training split's 65 characters in the same order
    (nanoGPT's shakespeare_char ids), so earlier runs' results reproduce."""
    dm = TextDataModule(path=path, tokenizer="char", cache_dir=str(tmp_path))
    dm.setup()
    text = read_text(dm.path)
    assert "".join(dm.vocab.chars) == NANOGPT_SHAKESPEARE_CHARS
    assert dm.vocab.chars == sorted(set(text[: int(len(text) * 0.9)]))


def test_a_character_outside_a_given_vocabulary_names_file_line_split_and_character(tmp_path):
    given = CharVocab("abc \n").to_json()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("abc\n" * 10 + "abQ\n" + "abc\n" * 100)
    with pytest.raises(ValueError, match=r"corpus\.txt:11 \(training split\): character 'Q' \(U\+0051\)"):
        TextDataModule(path=str(corpus), tokenizer="char", vocab_json=given, cache_dir=str(tmp_path)).setup()
    corpus.write_text("abc\n" * 100 + "ab\u00e9\n")
    with pytest.raises(ValueError, match=r"corpus\.txt:101 \(validation split\): character 'é' \(U\+00E9\)"):
        TextDataModule(path=str(corpus), tokenizer="char", vocab_json=given, cache_dir=str(tmp_path)).setup()
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "a.txt").write_text("abc\n" * 100)
    (folder / "b.txt").write_text("abc\nabc\nab!\n" + "abc\n" * 10)
    with pytest.raises(ValueError, match=r"b\.txt:3 \(validation split\): character '!'"):
        TextDataModule(
            path=str(folder), tokenizer="char", vocab_json=given, cache_dir=str(tmp_path), split="tail"
        ).setup()
    # A folder's default split holds out the end of each file: line 3 of b.txt now trains.
    with pytest.raises(ValueError, match=r"b\.txt:3 \(training split\): character '!'"):
        TextDataModule(path=str(folder), tokenizer="char", vocab_json=given, cache_dir=str(tmp_path)).setup()


# -- loaders ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("cuda", [False, True])
def test_text_loaders_pin_memory_when_cuda_is_available(monkeypatch, cuda):
    """Both text data modules (language modelling, classification) pin their batches for CUDA."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    language = TextDataModule(tokenizer="char", block_size=16, batch_size=4)
    reviews = fixture_reviews()
    for data in (language, reviews):
        data.setup("fit")
        for loader in (data.train_dataloader(), data.val_dataloader()):
            assert loader.pin_memory is cuda, type(data).__name__
