"""One way to point at data (issue #17): the ``paths`` group's ``data_dir`` is every shipped data
config's root, ``$OMNIFORMER_DATA`` moves it, and every data module takes ``data.root`` (a multi-task run's
members take theirs from its ``data.root``)."""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path

import pytest
from hydra.utils import get_class
from PIL import Image

from omniformer.config import check_train_config
from omniformer.data.locations import data_location
from omniformer.data.paired_manifest import PairedManifestDataModule
from tests.helpers.overrides import ON_CPU, TINY_MODEL
from tests.helpers.paths import FIXTURES
from tests.helpers.runs import compose_train, read_results, run_main

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


@pytest.mark.slow
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


@pytest.mark.slow
def test_movie_reviews_and_multitask_members_go_through_paths_data_dir():
    reviews = compose_train(["experiment=movie_reviews", "paths.data_dir=/d"])
    assert (reviews.data.root, reviews.data.path) == ("/d", "movie_reviews")
    multi = compose_train(["experiment=multitask", "paths.data_dir=/d"])
    assert multi.data.members.mnist.root == "/d" and multi.data.members.spoken_digits.root == "/d/fsdd"
    lm_reviews = compose_train(["task=multitask", "tasks=[text_lm,movie_reviews]", "paths.data_dir=/d"])
    assert lm_reviews.data.members.movie_reviews.root == "/d"
    csv = compose_train(["task=text_classification", "data=text_csv", "data.path=reviews.csv"])
    assert csv.data.root is None  # your own file, relative to where you run the command


# Every member task and where under the multi-task run's data.root it reads (text_lm: the bundled corpus).
MEMBERS_UNDER_ROOT = {
    "mnist": "",
    "read_digits": "",
    "movie_reviews": "",
    "spoken_digits": "/fsdd",
    "transcribe_digits": "/fsdd",
}
MULTITASK_PRESETS = [
    "multitask",
    "multitask_mnist",
    "multitask_spoken_digits",
    "multitask_prefix",
    "multitask_text_lm",
]


def member_roots(cfg) -> dict[str, str | None]:
    return {name: member.get("root") for name, member in cfg.data.members.items()}


@pytest.mark.parametrize("root", ["data.root", "paths.data_dir"])
def test_one_root_override_moves_every_multitask_member(root, monkeypatch):
    monkeypatch.delenv("OMNIFORMER_DATA", raising=False)
    every = compose_train(["task=multitask", f"tasks=[text_lm,{','.join(MEMBERS_UNDER_ROOT)}]", f"{root}=/d"])
    assert every.data.root == "/d"
    assert member_roots(every) == {
        "text_lm": None,
        **{name: "/d" + tail for name, tail in MEMBERS_UNDER_ROOT.items()},
    }
    assert every.data.members.text_lm.path is None  # the bundled Tiny Shakespeare


@pytest.mark.parametrize("preset", MULTITASK_PRESETS)
def test_multitask_presets_read_every_member_under_data_root(preset):
    roots = member_roots(compose_train([f"experiment={preset}", "data.root=/d"]))
    assert roots == {name: None if name == "text_lm" else "/d" + MEMBERS_UNDER_ROOT[name] for name in roots}


@pytest.mark.slow  # trains 2 steps through omniformer-train's main() (about 2 s)
def test_a_multitask_run_finds_its_data_under_data_root_from_any_directory(tmp_path):
    """omniformer-train run from a folder that is not the repository, with data.root naming the data."""
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copytree(FIXTURES / "mnist" / "MNIST", data / "MNIST")  # copies: the log names resolved folders
    shutil.copytree(FIXTURES / "fsdd", data / "fsdd")
    run = tmp_path / "run"
    run_main(
        "omniformer.train", "task=multitask", "tasks=[mnist, spoken_digits]", *TINY_MODEL,
        f"data.root={data}", "data.members.mnist.val_size=4", "data.members.mnist.batch_size=4",
        "data.members.spoken_digits.val_takes=1", "data.members.spoken_digits.batch_size=2",
        "trainer.max_steps=2", "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0",
        "test_after_fit=false", *ON_CPU, f"hydra.run.dir={run}", cwd=elsewhere,
    )  # fmt: skip
    assert read_results(run)["steps"] == 2
    log = (run / "train.log").read_text()
    assert str(data) in log and "../shared/data" not in log


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
        "omniformer.data.multitask.MultiTaskDataModule",
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
