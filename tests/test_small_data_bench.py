"""benchmarks.small_data on a handful of real files: export, the split read back from a run's config,
the split-folder copy, the logistic-regression baseline and the table (no training; seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from benchmarks import small_data
from tests.helpers.data import image_folder
from tests.helpers.overrides import image_args
from tests.helpers.paths import SHARED_DATA, needs_shared_data
from tests.helpers.runs import compose_train, read_results, run_main


def _saved_run(tmp_path: Path, kind: str, root: Path) -> Path:
    """A run folder holding only the ``.hydra/config.yaml`` omniformer-train would save for ``root``."""
    cfg = compose_train([*small_data.COMMANDS[kind], f"data.root={root}"])
    run_dir = tmp_path / f"run_{kind}"
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    return run_dir


def test_per_class_choice_is_seeded_and_balanced():
    labels = [i % 3 for i in range(30)]
    chosen = small_data.per_class_choice(labels, 4, seed=0)
    assert chosen == small_data.per_class_choice(labels, 4, seed=0)
    assert chosen != small_data.per_class_choice(labels, 4, seed=1)
    assert sorted(labels[i] for i in chosen) == [0] * 4 + [1] * 4 + [2] * 4
    with pytest.raises(ValueError, match="fewer than 11"):
        small_data.per_class_choice(labels, 11, seed=0)


def test_logistic_regression_separates_separable_classes():
    x = torch.cat([torch.randn(40, 5, dtype=torch.float64) + 4 * k for k in range(3)])
    y = torch.arange(3).repeat_interleave(40)
    weight, bias = small_data.fit_logistic(x, y, classes=3, l2=1e-3)
    assert small_data.accuracy(x, y, weight, bias) == 1.0


@pytest.mark.slow
@needs_shared_data("MNIST", "raw")
def test_image_export_split_baseline(tmp_path):
    folder = small_data.export_images(tmp_path / "images", 100, seed=0, data=SHARED_DATA)
    files = sorted(folder.rglob("*.png"))
    assert len(files) == 100 and sorted({f.parent.name for f in files}) == [str(d) for d in range(10)]
    splits = small_data.run_splits(_saved_run(tmp_path, "image", folder))
    assert {s: len(p) for s, p in splits.items()} == {"train": 81, "val": 9, "test": 10}
    assert sorted(p for ps in splits.values() for p in ps) == files  # a partition of the folder
    copied = small_data.write_split_folders(splits, tmp_path / "split")
    assert sorted(p.name for p in (copied / "test").rglob("*.png")) == sorted(p.name for p in splits["test"])
    base = small_data.baseline("image", splits)
    assert base["l2"] in small_data.L2_GRID and base["test_acc"] >= 0.5  # chance is 0.1


@needs_shared_data("fsdd", "recordings")
def test_audio_export_split_baseline(tmp_path):
    folder = small_data.export_audio(tmp_path / "clips", 40, seed=0, data=SHARED_DATA)
    assert len(list(folder.rglob("*.wav"))) == 40
    splits = small_data.run_splits(_saved_run(tmp_path, "audio", folder))
    assert {s: len(p) for s, p in splits.items()} == {"train": 20, "val": 10, "test": 10}
    assert small_data.mfcc_features(splits["test"][:2]).shape == (2, 20)
    base = small_data.baseline("audio", splits)
    assert 0.0 <= base["test_acc"] <= 1.0


def test_table_has_one_row_per_folder():
    row = {
        "folder": "image",
        "files": 1500,
        "split": {"train": 1215, "val": 135, "test": 150},
        "test_acc": 0.9,
        "baseline": {"test_acc": 0.88},
        "difference_pp": 2.0,
        "split_folder_test_acc": 0.9,
        "split_folder_equal": True,
        "wall_seconds": 60.0,
        "split_folder_wall_seconds": 66.0,
    }
    table = small_data.markdown([row, {**row, "folder": "audio", "split_folder_equal": False}])
    lines = table.splitlines()
    assert len(lines) == 4 and "1,215 / 135 / 150" not in table and "1215 / 135 / 150" in lines[2]
    assert "90.00%" in lines[2] and "+2.00 pp" in lines[2] and "(equal)" in lines[2]
    assert "(differs)" in lines[3] and "1.0 / 1.1 min" in lines[3]


class _Batches:
    """A data module whose training loader has ``n`` batches."""

    def __init__(self, n: int) -> None:
        self.n = n

    def train_dataloader(self) -> list[int]:
        return list(range(self.n))


@pytest.mark.parametrize(
    ("trainer", "batches", "epochs"),
    [
        ({"max_epochs": None, "min_epochs": 5, "min_steps": 1000}, 19, 53),  # 1,215 images, batch 64
        ({"max_epochs": None, "min_epochs": 5, "min_steps": 1000}, 430, 5),  # MNIST: 5 epochs as before
        ({"max_epochs": None, "min_epochs": 30, "min_steps": 1000, "devices": 2}, 16, 125),  # 8 per process
        ({"max_epochs": None, "min_steps": 1000, "accumulate_grad_batches": 4}, 100, 40),
        ({"max_epochs": 3, "min_epochs": 5, "min_steps": 1000}, 19, 3),  # an explicit max_epochs is kept
        ({"max_epochs": None}, 19, None),  # no minimum: Lightning's own default applies
        ({"max_epochs": None, "min_epochs": 5, "min_steps": 1000, "max_steps": 5000}, 19, -1),  # steps decide
    ],
)
def test_max_epochs_null_is_sized_to_reach_min_steps(trainer, batches, epochs):
    from omniformer.fit_run import epochs_for_min_steps

    epochs_for_min_steps(trainer, _Batches(batches))
    assert trainer["max_epochs"] == epochs


def test_the_classification_tasks_size_their_epochs_to_the_data():
    for task in ("image_classification", "audio_classification"):
        cfg = compose_train([f"task={task}"])
        assert cfg.trainer.max_epochs is None and cfg.trainer.min_steps == 1000 and cfg.trainer.min_epochs > 0


@pytest.mark.slow
@pytest.mark.parametrize(("budget", "steps"), [([], 15), (["trainer.max_steps=7"], 7)])
def test_a_default_classification_run_trains_whole_epochs_up_to_min_steps(tmp_path, budget, steps):
    """omniformer-train with the task's max_epochs: null on 20 images (5 batches of 4 per epoch):
    min_epochs=1 and min_steps=12 give 3 whole epochs (15 steps); an explicit trainer.max_steps wins."""
    args = [
        a for a in image_args(image_folder(tmp_path / "images")) if not a.startswith("trainer.max_epochs")
    ]
    run_dir = tmp_path / "run"
    proc = run_main(
        "omniformer.train",
        *args,
        "trainer.min_epochs=1",
        "trainer.min_steps=12",
        *budget,
        f"hydra.run.dir={run_dir}",
    )
    assert read_results(run_dir)["steps"] == steps
    said = "the steps decide" if budget else "3 epochs of 5 optimizer steps (15 steps"
    assert said in (run_dir / "train.log").read_text() + proc.stdout + proc.stderr
