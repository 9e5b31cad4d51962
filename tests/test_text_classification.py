"""Text classification: the lengths→mask tokenizer argument, the data module's readers, split,
vocabulary, batches and errors, and a tiny end-to-end run on real movie reviews."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import omniformer.data.text_classification as tc
from omniformer.data.collate import pad_batch
from omniformer.data.labelled_text import sort_classes
from omniformer.data.text_classification import TextClassificationDataModule
from omniformer.tokenizers import TextTokenizer
from tests.helpers.data import REVIEWS
from tests.helpers.data import fixture_reviews as small
from tests.helpers.overrides import TEXT_CLASSIFICATION
from tests.helpers.paths import SHARED_DATA, needs_shared_data
from tests.helpers.runs import compose_train, read_results, run_main


# -- tokenizer ---------------------------------------------------------------------------------------
def test_text_tokenizer_lengths_set_the_mask_and_keep_the_old_behaviour():
    tokenizer = TextTokenizer(10, 8)
    ids = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    tokens = tokenizer(ids, lengths=torch.tensor([3, 2]))
    assert tokens.mask.tolist() == [[True, True, True, False], [True, True, False, False]]
    assert tokens.positions.tolist() == [[0, 1, 2, 3]] * 2
    plain = tokenizer(ids)
    assert plain.mask is None
    torch.testing.assert_close(plain.x, tokens.x)
    with pytest.raises(ValueError, match="either mask= or lengths="):
        tokenizer(ids, mask=torch.ones(2, 4, dtype=torch.bool), lengths=torch.tensor([3, 2]))
    with pytest.raises(ValueError, match=r"lengths must have shape \(2,\)"):
        tokenizer(ids, lengths=torch.tensor([3, 2, 1]))


# -- data --------------------------------------------------------------------------------------------
def test_folder_layout_split_is_stratified_deterministic_and_independent_of_the_seed():
    torch.manual_seed(0)
    first = small()
    first.setup()
    torch.manual_seed(123)
    second = small()
    second.setup()
    assert first.classes == ["neg", "pos"]
    for split in ("train_set", "val_set", "test_set"):
        a, b = getattr(first, split), getattr(second, split)
        assert sorted(a.labels) == [0, 1], split  # one review of each class per split
        assert all(torch.equal(x, y) for x, y in zip(a.ids, b.ids))
    assert first.spec() == {
        "vocab_size": 300,
        "num_classes": 2,
        "class_names": ["neg", "pos"],
        "max_length": 32,
    }


def test_vocabulary_is_trained_on_the_training_split_only(tmp_path):
    """Rewriting the validation and test reviews leaves the vocabulary as it was; rewriting a training
    review changes it (the split depends on the labels only, not on the text)."""
    shutil.copytree(REVIEWS, tmp_path / "reviews")
    data = small(tmp_path / "reviews")
    data.setup()
    held_out = {data.vocab.decode(ids.tolist())[:40] for ids in data.val_set.ids + data.test_set.ids}
    files = sorted((tmp_path / "reviews").rglob("*.txt"))
    is_held_out = {f: any(f.read_text().startswith(text) for text in held_out) for f in files}
    assert sum(is_held_out.values()) == 4  # two validation and two test reviews

    def vocabulary_after_rewriting(held_out_files: bool) -> str:
        for f in files:
            if is_held_out[f] == held_out_files:
                f.write_text("zyzzyva quixotic " * 40 + f.read_text())
        again = small(tmp_path / "reviews")
        again.setup()
        return again.vocab.to_json()

    assert vocabulary_after_rewriting(held_out_files=True) == data.vocab.to_json()
    assert vocabulary_after_rewriting(held_out_files=False) != data.vocab.to_json()


def test_batches_are_padded_ids_lengths_labels_and_long_documents_are_cropped():
    data = small(max_length=8, keep="head", train_crop="same")
    data.setup()
    ids, lengths, labels = next(iter(data.val_dataloader()))
    assert ids.dtype == torch.long and ids.shape == (2, 8)
    assert lengths.tolist() == [8, 8] and sorted(labels.tolist()) == [0, 1]
    full = data.encode(next(iter((REVIEWS / "neg").glob("cv506*.txt"))).read_text())
    assert len(full) > 8
    tail = small(max_length=8, keep="tail")
    tail.setup()
    assert not torch.equal(tail.val_set[0][0], data.val_set[0][0])
    batch = pad_batch([(torch.tensor([5, 6, 7]), 1), (torch.tensor([9]), 0)])
    assert batch[0].tolist() == [[5, 6, 7], [9, 0, 0]] and batch[1].tolist() == [3, 1]


def test_random_training_crops_are_windows_of_the_document():
    data = small(max_length=8, train_crop="random")
    data.setup()
    ids = data.train_set.ids[0]
    torch.manual_seed(1)
    crops = {tuple(data.train_set[0][0].tolist()) for _ in range(20)}
    assert len(crops) > 1
    text = ids.tolist()
    for crop in crops:
        assert any(tuple(text[i : i + 8]) == crop for i in range(len(text) - 7))


def test_csv_and_jsonl_with_configured_keys(tmp_path):
    rows = [
        (
            f"{'great' if i % 2 else 'dull'} film number {i} , {'loved' if i % 2 else 'hated'} it",
            5 if i % 2 else 1,
        )
        for i in range(12)
    ]
    csv_path = tmp_path / "reviews.csv"
    csv_path.write_text("review,stars\n" + "\n".join(f'"{t}",{s}' for t, s in rows) + "\n")
    jsonl_path = tmp_path / "reviews.jsonl"
    jsonl_path.write_text("\n".join(json.dumps({"body": t, "y": s}) for t, s in rows) + "\n")
    for path, text_key, label_key in ((csv_path, "review", "stars"), (jsonl_path, "body", "y")):
        data = small(path, text_key=text_key, label_key=label_key, val_fraction=0.2, test_fraction=0.2)
        data.setup()
        assert data.classes == ["1", "5"]
        assert len(data.train_set) + len(data.val_set) + len(data.test_set) == 12
    assert sort_classes(["10", "2", "1"]) == ["1", "2", "10"]
    assert sort_classes(["pos", "neg"]) == ["neg", "pos"]


@pytest.mark.parametrize(
    ("content", "options", "message"),
    [
        ("text,label\nhello,1\n", {"text_key": "review"}, "data.text_key='review': .*has no such column"),
        ('{"text": "a", "label": 1}\nnot json\n', {}, r"reviews\.jsonl:2 is not valid JSON"),
        ('{"text": "a"}\n', {}, r"data.label_key='label': .*reviews\.jsonl:1 has no such key"),
    ],
)
def test_bad_tables_name_the_key_file_and_line(tmp_path, content, options, message):
    suffix = ".csv" if content.startswith("text,") else ".jsonl"
    path = tmp_path / f"reviews{suffix}"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        small(path, **options).setup()


def test_bad_paths_and_settings_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        small(tmp_path / "nope").setup()
    (tmp_path / "only" / "pos").mkdir(parents=True)
    shutil.copy(next(REVIEWS.glob("pos/*.txt")), tmp_path / "only" / "pos" / "a.txt")
    with pytest.raises(ValueError, match="need at least 2"):
        small(tmp_path / "only", val_fraction=0.1, test_fraction=0.1).setup()
    with pytest.raises(ValueError, match="cannot tell the format"):
        small(tmp_path / "data.txt").resolved_format()
    with pytest.raises(ValueError, match=r"data\.keep="):
        small(keep="middle")
    with pytest.raises(ValueError, match="both splits are needed"):
        small(test_fraction=0.0)


def test_artifacts_round_trip_and_prediction_inputs():
    data = small()
    data.setup()
    artifacts = data.artifacts()
    assert json.loads(artifacts["classes.json"]) == ["neg", "pos"]
    fresh = small()
    fresh.use_artifacts(artifacts)
    assert fresh.classes == ["neg", "pos"] and fresh.vocab.to_json() == data.vocab.to_json()
    ids, lengths = fresh.load_inputs(sorted(REVIEWS.glob("*/*.txt"))[:2])
    assert ids.shape[0] == 2 and int(lengths.max()) <= 32


def test_task_config_composes_with_both_data_configs():
    cfg = compose_train(["task=text_classification", "data=movie_reviews"])
    assert cfg.task.modality == "text" and cfg.task.net.tokenizers.text._target_.endswith("TextEmbedding")
    assert cfg.callbacks.checkpoint.monitor == "val_acc"
    csv = compose_train(["task=text_classification", "data=text_csv", "data.path=x.csv"])
    assert csv.data.format == "auto" and csv.data.path == "x.csv"


@pytest.mark.slow
def test_tiny_run_on_fixture_reviews_reports_held_out_accuracy(tmp_path):
    run_dir = tmp_path / "run"
    run_main(
        "omniformer.train",
        "task=text_classification",
        "data=movie_reviews",
        f"data.path={REVIEWS}",
        "data.vocab_size=300",
        "data.max_length=32",
        "data.val_fraction=0.34",
        "data.test_fraction=0.34",
        "trainer.max_epochs=2",
        *TEXT_CLASSIFICATION,
        f"hydra.run.dir={run_dir}",
    )
    results = read_results(run_dir)
    assert results["steps"] == 2 and 0 <= results["test_acc"] <= 1
    assert json.loads((run_dir / "classes.json").read_text()) == ["neg", "pos"]


@pytest.mark.slow
@needs_shared_data("movie_reviews")
def test_movie_reviews_corpus_reads_2000_reviews_in_an_80_10_10_split():
    cfg = compose_train(["task=text_classification", "data=movie_reviews"])
    data = TextClassificationDataModule(
        str(SHARED_DATA / "movie_reviews"),
        **{k: v for k, v in cfg.data.items() if k not in ("_target_", "path")},
    )
    items = data.read()
    assert len(items) == 2000 and {label for _, label in items} == {"neg", "pos"}


# -- records hold any character; errors name the physical line ---------------------------------------
# U+2028 (line separator), U+0085 (next line), form feed and group separator: str.splitlines() breaks a
# line at each of them, but inside a CSV or JSON field they are ordinary characters.
ODD = ["\u2028", "\u0085", "\x0c", "\x1d"]


def odd_rows(count: int = 12) -> list[tuple[str, int]]:
    return [(f"{'great' if i % 2 else 'dull'} film{ODD[i % 4]}number {i}", i % 2) for i in range(count)]


def test_csv_and_jsonl_fields_may_hold_unicode_line_breaks(tmp_path):
    rows = odd_rows()
    csv_path = tmp_path / "reviews.csv"
    csv_path.write_bytes(("text,label\r\n" + "".join(f"{t},{y}\r\n" for t, y in rows)).encode("utf-8"))
    jsonl_path = tmp_path / "reviews.jsonl"
    lines = [json.dumps({"text": t, "label": y}, ensure_ascii=False) for t, y in rows]
    jsonl_path.write_bytes(("\r\n".join(lines[:6]) + "\n" + "\n".join(lines[6:]) + "\n").encode("utf-8"))
    assert "\u2028" in jsonl_path.read_text(encoding="utf-8")  # written raw, not escaped
    want = [(t, str(y)) for t, y in rows]
    for path, kind in ((csv_path, "csv"), (jsonl_path, "jsonl")):
        assert tc.read_table(path, kind, "text", "label") == want
        data = small(path, val_fraction=0.2, test_fraction=0.2)
        data.setup()
        assert data.classes == ["0", "1"]
        assert len(data.train_set) + len(data.val_set) + len(data.test_set) == 12


def test_csv_error_names_the_physical_line_after_a_quoted_newline(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text('text,label\ngood,1\n"two\nlines",0\n\nfine\u2028still one line,1\nbad row,\n')
    # Records: header (line 1), line 2, lines 3-4, a blank line 5, line 6, the bad record on line 7.
    with pytest.raises(ValueError, match=r"reviews\.csv:7: missing or non-scalar 'label'"):
        tc.read_table(path, "csv", "text", "label")
    path.write_text('text,label\n"a\nb",1\n"starts here\nand has no label"\n')
    with pytest.raises(ValueError, match=r"reviews\.csv:4: missing or non-scalar 'label'"):
        tc.read_table(path, "csv", "text", "label")


def test_jsonl_error_names_the_physical_line(tmp_path):
    path = tmp_path / "reviews.jsonl"
    good = json.dumps({"text": "a\u2028b\u0085c", "label": 1}, ensure_ascii=False)
    path.write_text(f"{good}\n{good}\n\n{good}\nnot json\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"reviews\.jsonl:5 is not valid JSON"):
        tc.read_table(path, "jsonl", "text", "label")
