"""omniformer-predict output= (issue #17): one row per input in JSON Lines, JSON or CSV, equal to what
it prints and to ``Model.predict``; a missing folder or an unknown suffix fails naming the path."""

from __future__ import annotations

import csv
import json
import re

import pytest

import omniformer
from omniformer.prediction_files import output_format, write_predictions
from tests.helpers.paths import FIXTURES
from tests.helpers.runs import run_main

DIGITS = sorted((FIXTURES / "mnist" / "png").glob("*.png"))  # a 7 and a 2


@pytest.fixture(scope="module")
def digits_ckpt(tiny_mnist_run):
    return tiny_mnist_run / "checkpoints" / "best.ckpt"


def predict_cli(ckpt, *args: str, check: bool = True):
    inputs = f"inputs=[{','.join(map(str, DIGITS))}]"
    return run_main("omniformer.predict", f"ckpt={ckpt}", inputs, "top_k=3", *args, check=check)


def test_jsonl_rows_hold_the_top_label_and_the_top_k(digits_ckpt, tmp_path):
    path = tmp_path / "preds.jsonl"
    proc = predict_cli(digits_ckpt, f"output={path}")
    assert f"2 predictions written to {path}" in proc.stdout
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    expected = omniformer.load(digits_ckpt).predict(DIGITS, top_k=3)
    assert [r["input"] for r in rows] == [str(p) for p in DIGITS]
    for row, want in zip(rows, expected):
        assert row["top"] == want["top"] and len(row["top"]) == 3
        assert (row["label"], row["prob"]) == (want["top"][0]["label"], want["top"][0]["prob"])


def test_csv_flattens_the_top_k_into_columns(digits_ckpt, tmp_path):
    path = tmp_path / "preds.csv"
    predict_cli(digits_ckpt, f"output={path}")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    header = ["input", "label", "prob", "label_1", "prob_1", "label_2", "prob_2", "label_3", "prob_3"]
    assert list(rows[0]) == header and len(rows) == 2
    expected = omniformer.load(digits_ckpt).predict(DIGITS, top_k=3)
    for row, want in zip(rows, expected):
        assert row["label"] == row["label_1"] == want["top"][0]["label"]
        assert float(row["prob_2"]) == pytest.approx(want["top"][1]["prob"])


def test_format_overrides_the_suffix_and_json_is_one_list(digits_ckpt, tmp_path):
    path = tmp_path / "preds.txt"
    predict_cli(digits_ckpt, f"output={path}", "format=json")
    rows = json.loads(path.read_text())
    assert isinstance(rows, list) and len(rows) == 2 and {"input", "label", "prob", "top"} == set(rows[0])


def test_a_prefix_lm_row_is_the_input_and_its_text(tmp_path):
    rows = [{"input": "a.wav", "text": "three nine"}, {"input": "b.wav", "text": 'say "one", two'}]
    write_predictions(rows, tmp_path / "t.csv")
    with (tmp_path / "t.csv").open(newline="") as handle:
        assert list(csv.DictReader(handle)) == rows
    write_predictions(rows, tmp_path / "t.jsonl")
    assert [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()] == rows


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["output={tmp}/no/such/folder/preds.csv"],
            r"output=.*no/such/folder/preds\.csv: the folder .* does not exist",
        ),
        (
            ["output={tmp}/preds.xlsx"],
            r"output=.*preds\.xlsx: cannot tell the format from the suffix '\.xlsx'",
        ),
        (["output={tmp}/preds.csv", "format=xml"], r"format='xml': write one of jsonl"),
        (["format=csv"], r"format=csv: give output=<file> too"),
    ],
)
def test_bad_outputs_fail_naming_the_path_before_the_model_loads(tmp_path, args, message):
    args = [a.format(tmp=tmp_path) for a in args]
    proc = predict_cli(tmp_path / "never_loaded.ckpt", *args, check=False)
    assert proc.returncode != 0
    assert re.search(message, proc.stderr), proc.stderr
    assert "never_loaded.ckpt does not exist" not in proc.stderr


def test_an_output_folder_is_refused():
    with pytest.raises(ValueError, match=r"output=.* is a folder; give a file name"):
        output_format(FIXTURES, "csv")
