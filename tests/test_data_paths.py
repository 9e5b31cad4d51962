"""One way to point at data (issue #17): the ``paths`` group's ``data_dir`` is every shipped data
config's root, ``$OMNIFORMER_DATA`` moves it, and every data module takes ``data.root``."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from hydra.utils import get_class
from PIL import Image

from omniformer.config import check_train_config
from omniformer.data.locations import data_location
from omniformer.data.paired_manifest import PairedManifestDataModule
from tests.helpers.runs import compose_train

# Shipped configs and where under paths.data_dir they read.
UNDER_DATA_DIR = {
    ("data=mnist", "task=image_classification"): ("root", ""),
    ("data=fashion_mnist", "task=image_classification"): ("root", ""),
    ("data=cifar10", "task=image_classification"): ("root", ""),
    ("data=spoken_digits", "task=audio_classification"): ("root", "/fsdd"),
    ("data=speech_commands", "task=audio_classification"): ("root", ""),
    ("data=digit_strings", "task=prefix_lm", "prefix=image"): ("root", ""),
    ("data=spoken_digit_utterances", "task=prefix_lm", "prefix=audio"): ("root", "/fsdd"),
    ("data=movie_reviews", "task=text_classification"): ("root", ""),
}


@pytest.mark.parametrize("overrides", list(UNDER_DATA_DIR), ids=lambda o: o[0])
def test_every_shipped_dataset_is_read_under_paths_data_dir(overrides, monkeypatch):
    monkeypatch.delenv("OMNIFORMER_DATA", raising=False)
    key, tail = UNDER_DATA_DIR[overrides]
    cfg = compose_train(list(overrides))
    assert cfg.paths.data_dir == "../shared/data" and cfg.data[key] == "../shared/data" + tail
    moved = compose_train([*overrides, "paths.data_dir=/datasets"])
    assert moved.data[key] == "/datasets" + tail
    monkeypatch.setenv("OMNIFORMER_DATA", "/env/data")
    assert compose_train(list(overrides)).data[key] == "/env/data" + tail
    check_train_config(moved)


def test_movie_reviews_and_multitask_members_go_through_paths_data_dir():
    reviews = compose_train(["experiment=movie_reviews", "paths.data_dir=/d"])
    assert (reviews.data.root, reviews.data.path) == ("/d", "movie_reviews")
    multi = compose_train(["experiment=multitask", "paths.data_dir=/d"])
    assert multi.data.members.mnist.root == "/d" and multi.data.members.spoken_digits.root == "/d/fsdd"
    lm_reviews = compose_train(["task=multitask", "tasks=[text_lm,movie_reviews]", "paths.data_dir=/d"])
    assert lm_reviews.data.members.movie_reviews.root == "/d"
    csv = compose_train(["task=text_classification", "data=text_csv", "data.path=reviews.csv"])
    assert csv.data.root is None  # your own file, relative to where you run the command


@pytest.mark.parametrize(
    "target",
    [
        "omniformer.data.TextDataModule",
        "omniformer.data.text_classification.TextClassificationDataModule",
        "omniformer.data.MNISTDataModule",
        "omniformer.data.ImageFolderDataModule",
        "omniformer.data.AudioFolderDataModule",
        "omniformer.data.SpokenDigitsDataModule",
        "omniformer.data.SpeechCommandsDataModule",
        "omniformer.data.paired_manifest.PairedManifestDataModule",
        "omniformer.data.digit_string_pairs.DigitStringsDataModule",
        "omniformer.data.spoken_digit_pairs.SpokenDigitUtterancesDataModule",
    ],
)
def test_every_data_module_takes_a_root(target):
    cls = get_class(target)
    own = [klass for klass in cls.__mro__ if "__init__" in vars(klass)]
    assert "root" in {name for klass in own for name in inspect.signature(klass.__init__).parameters}


def test_data_location_rules(tmp_path):
    assert data_location(tmp_path, "books") == tmp_path / "books"
    assert data_location(tmp_path, "/abs/books") == Path("/abs/books")
    assert data_location(None, "books").as_posix() == "books"
    assert data_location(tmp_path, None) == tmp_path
    assert data_location(None, None) is None
    with pytest.raises(ValueError, match=r"data\.path is empty"):
        data_location(tmp_path, " ")


def test_paired_manifests_are_read_under_root(tmp_path):
    (tmp_path / "strips").mkdir()
    for i in range(4):
        Image.new("L", (8, 4), 40 * i).save(tmp_path / "strips" / f"{i}.png")
    (tmp_path / "all.jsonl").write_text(
        "".join(f'{{"image": "strips/{i}.png", "text": "{i}"}}\n' for i in range(4)), encoding="utf-8"
    )
    dm = PairedManifestDataModule(
        manifest="all.jsonl", root=str(tmp_path), val_fraction=0.25, test_fraction=0.25
    )
    assert sum(len(rows) for rows in dm.rows().values()) == 4
