"""Image data modules: real on-disk formats (MNIST IDX, CIFAR pickles, image folders), splits,
transforms from config, prediction inputs, and one clear error per kind of bad input."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from hydra.utils import instantiate
from PIL import Image

from omniformer.data import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
)
from omniformer.data.image import default_data_root
from omniformer.data.splits import split_indices
from omniformer.tasks.classification import check_labels
from tests.helpers.data import COLOURS, make_image_folder
from tests.helpers.paths import FIXTURES, SHARED_DATA, needs_shared_data
from tests.helpers.runs import compose_train

MNIST_FIXTURE = FIXTURES / "mnist"
FIXTURE_TRAIN_LABELS = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4, 3, 5, 3, 6, 1, 7, 2, 8, 6, 9]
FIXTURE_TEST_LABELS = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
CROP = {"_target_": "torchvision.transforms.v2.RandomCrop", "size": 28, "padding": 2}


# -- fixtures written in the real formats -------------------------------------------------------
def _cifar_images(count: int, offset: int) -> np.ndarray:
    """``count×3072`` uint8 rows in CIFAR's layout (1024 red, 1024 green, 1024 blue, row-major)."""
    rows = np.zeros((count, 3, 32, 32), dtype=np.uint8)
    for i in range(count):
        rows[i, 0] = (offset + i) % 256  # red plane = image index
        rows[i, 1, :, :16] = 200  # green only in the left half
        rows[i, 2] = np.arange(32, dtype=np.uint8)[None, :] * 4  # blue grows to the right
    return rows.reshape(count, 3072)


def write_cifar10(root: Path, per_batch: int = 4, test: int = 6) -> Path:
    """A tiny CIFAR-10 in torchvision's ``cifar-10-batches-py`` pickled-batch format."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for b in range(1, 6):
        batch = {
            "batch_label": f"training batch {b} of 5",
            "labels": [(b * per_batch + i) % 10 for i in range(per_batch)],
            "data": _cifar_images(per_batch, (b - 1) * per_batch),
            "filenames": [f"img_{b}_{i}.png" for i in range(per_batch)],
        }
        (folder / f"data_batch_{b}").write_bytes(pickle.dumps(batch, protocol=2))
    batch = {"batch_label": "testing batch 1 of 1", "labels": [i % 10 for i in range(test)]}
    batch |= {"data": _cifar_images(test, 100), "filenames": [f"test_{i}.png" for i in range(test)]}
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    meta = {"num_cases_per_batch": per_batch, "label_names": names, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return root


def write_cifar100(root: Path, train: int = 12, test: int = 5) -> Path:
    """A tiny CIFAR-100 in torchvision's ``cifar-100-python`` format (fine and coarse labels)."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, count in (("train", train), ("test", test)):
        fine = [(7 * i) % 100 for i in range(count)]
        batch = {
            "data": _cifar_images(count, 0),
            "fine_labels": fine,
            "coarse_labels": [f // 5 for f in fine],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {"fine_label_names": [f"class{i:02d}" for i in range(100)], "coarse_label_names": ["c"] * 20}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return root


@pytest.fixture
def skip_md5(monkeypatch):
    """Fixture files cannot match the real CIFAR md5 sums: check existence, run everything else."""
    monkeypatch.setattr(
        torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: Path(path).is_file()
    )


# -- MNIST (raw IDX) -----------------------------------------------------------------------------
def mnist(**kwargs) -> MNISTDataModule:
    args = {"root": str(MNIST_FIXTURE), "val_size": 4, "num_workers": 0, "patch_size": 7, "batch_size": 8}
    return MNISTDataModule(**(args | kwargs))


def test_mnist_fixture_splits_spec_and_batches():
    dm = mnist(train_transforms={"shift": CROP})
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (16, 4, 10)
    assert dm.spec() == {
        "num_classes": 10,
        "in_channels": 1,
        "image_size": 28,
        "patch_size": 7,
        "class_names": [f"{i} - {w}" for i, w in enumerate(DIGIT_WORDS)],
    }
    images, labels = next(iter(dm.test_dataloader()))
    assert images.shape == (8, 1, 28, 28) and images.dtype == torch.float32
    assert labels.tolist() == FIXTURE_TEST_LABELS[:8]
    # Normalised with MNIST's statistics: background pixels are -0.1307/0.3081.
    assert images.min().item() == pytest.approx(-0.1307 / 0.3081, abs=1e-4)
    held = sorted(FIXTURE_TRAIN_LABELS[i] for i in dm.val_set.dataset.indices)
    assert sorted(int(dm.val_set[i][1]) for i in range(4)) == held
    train_images, _ = next(iter(dm.train_dataloader()))
    assert train_images.shape == (8, 1, 28, 28)


def test_split_is_deterministic_and_seeded():
    first, again = split_indices(100, 0.1, seed=0), split_indices(100, 10, seed=0)
    assert first == again and len(first[1]) == 10
    assert set(first[0]).isdisjoint(first[1]) and len(first[0]) + len(first[1]) == 100
    assert split_indices(100, 10, seed=1)[1] != first[1]
    with pytest.raises(ValueError, match=r"data.val_size=100 holds out 100 of 100"):
        split_indices(100, 100, seed=0)
    with pytest.raises(ValueError, match=r"data.val_size=-3"):
        split_indices(100, -3, seed=0)


def test_missing_mnist_says_where_it_looked_and_how_to_download(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        MNISTDataModule(root=str(tmp_path)).setup("fit")
    message = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in message and "data.download=true" in message
    with pytest.raises(FileNotFoundError, match="FashionMNIST/raw"):
        FashionMNISTDataModule(root=str(tmp_path)).setup("fit")


def test_default_root_is_a_user_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("OMNIFORMER_DATA", str(tmp_path))
    assert MNISTDataModule().root == tmp_path == default_data_root()
    monkeypatch.delenv("OMNIFORMER_DATA")
    assert default_data_root() == Path.home() / ".cache" / "omniformer" / "data"


def test_image_size_not_divisible_by_patch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"data.image_size=28 is not divisible by data.patch_size=5"):
        mnist(patch_size=5)
    with pytest.raises(ValueError, match=r"data.image_size=\[30, 28\]"):
        mnist(image_size=[30, 28])


def test_resizing_mnist_changes_spec_and_batches():
    dm = mnist(image_size=[32, 16], patch_size=[8, 4])
    dm.setup("fit")
    assert dm.spec()["image_size"] == [32, 16] and dm.spec()["patch_size"] == [8, 4]
    assert next(iter(dm.val_dataloader()))[0].shape == (4, 1, 32, 16)


@needs_shared_data("MNIST", "raw", "train-images-idx3-ubyte")
def test_real_mnist_from_shared_data():
    dm = MNISTDataModule(root=str(SHARED_DATA), num_workers=0, patch_size=7, eval_batch_size=1000)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (55000, 5000, 10000)
    images, labels = next(iter(dm.val_dataloader()))
    assert images.shape == (1000, 1, 28, 28)
    assert abs(images.mean().item()) < 0.1 and abs(images.std().item() - 1) < 0.1  # the stats fit
    assert len(set(labels.tolist())) == 10


# -- CIFAR (pickled batches) ---------------------------------------------------------------------
def test_cifar10_fixture_in_the_real_format(tmp_path, skip_md5):
    root = write_cifar10(tmp_path)
    dm = CIFAR10DataModule(
        root=str(root), val_size=5, num_workers=0, batch_size=4, mean=[0, 0, 0], std=[1, 1, 1]
    )
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (15, 5, 6)
    spec = dm.spec()
    assert spec["num_classes"] == 10 and spec["in_channels"] == 3 and spec["image_size"] == 32
    assert spec["class_names"][:3] == ["airplane", "automobile", "bird"]
    image, label = dm.test_set[3]
    assert label == 3 and image.shape == (3, 32, 32)
    # CIFAR rows are channel planes: red = index (103), green only on the left, blue grows rightwards.
    assert torch.allclose(image[0], torch.full((32, 32), 103 / 255))
    assert image[1, :, :16].min() > 0.78 and image[1, :, 16:].max() == 0
    assert image[2, 0, 1] > image[2, 0, 0]
    # The configured augmentation (crop + flip + RandAugment, as in conf/data/cifar10.yaml) runs.
    cfg = compose_train(
        [
            "task=image_classification",
            "data=cifar10",
            f"data.root={root}",
            "data.num_workers=0",
            "data.val_size=5",
        ]
    )
    dm = instantiate(cfg.data)
    dm.setup("fit")
    assert [type(t).__name__ for t in dm.train_steps] == ["RandomCrop", "RandomHorizontalFlip", "RandAugment"]
    batch, labels = next(iter(dm.train_dataloader()))
    assert batch.shape == (15, 3, 32, 32) and labels.dtype == torch.int64


def test_cifar100_fixture(tmp_path, skip_md5):
    dm = CIFAR100DataModule(root=str(write_cifar100(tmp_path)), val_size=2, num_workers=0)
    dm.setup("fit")
    assert dm.spec()["num_classes"] == 100 and dm.spec()["class_names"][7] == "class07"
    assert dm.test_set[1][1] == 7


def test_download_true_fetches_through_torchvision(tmp_path, monkeypatch, skip_md5):
    """``data.download=true`` gets the files through torchvision's own CIFAR10.download (the machine
    is offline: here that download writes the tiny fixture, as the real one writes the archive's
    contents); without it, an empty root stays empty and is refused."""

    def offline_download(dataset):
        if not (Path(dataset.root) / "cifar-10-batches-py").is_dir():
            write_cifar10(Path(dataset.root))

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", offline_download)
    assert CIFAR10DataModule(root=str(tmp_path)).download is False  # off unless asked for
    with pytest.raises(FileNotFoundError):
        CIFAR10DataModule(root=str(tmp_path), val_size=2, num_workers=0).setup("fit")
    assert not any(tmp_path.iterdir())  # nothing fetched
    dm = CIFAR10DataModule(root=str(tmp_path), download=True, val_size=2, num_workers=0)
    dm.setup("fit")
    assert (tmp_path / "cifar-10-batches-py" / "test_batch").is_file() and len(dm.test_set) == 6
    assert len(dm.train_set) + len(dm.val_set) == 20


def test_cifar_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py .*data.download=true"):
        CIFAR10DataModule(root=str(tmp_path)).setup("fit")
    write_cifar10(tmp_path)  # present, but its md5 sums are not the real ones
    with pytest.raises(ValueError, match=r"cifar-10-batches-py are corrupt or incomplete"):
        CIFAR10DataModule(root=str(tmp_path)).setup("fit")


# -- image folders ---------------------------------------------------------------------------------
def folder_dm(root: Path, **kwargs) -> ImageFolderDataModule:
    args = {"root": str(root), "image_size": 16, "patch_size": 8, "num_workers": 0, "val_size": 3}
    return ImageFolderDataModule(**(args | {"test_size": 3} | kwargs))


def test_image_folder_flat_layout(tmp_path):
    dm = folder_dm(make_image_folder(tmp_path / "photos"))
    dm.setup("fit")
    assert dm.classes == ["blue", "green", "red"]
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (12, 3, 3)
    images, _ = next(iter(dm.train_dataloader()))
    assert images.shape == (12, 3, 16, 16)
    # mean/std were estimated from the training images, so normalised pixels are centred.
    assert len(dm.mean) == 3 and abs(images.mean().item()) < 0.5
    # Labels follow the colour: the red channel is highest for "red".
    raw = dm.transform(train=False)
    red = raw(Image.open(tmp_path / "photos" / "red" / "0.jpg").convert("RGB"))
    assert red[0].mean() > red[2].mean()
    assert json.loads(dm.artifacts()["classes.json"]) == ["blue", "green", "red"]


def test_image_folder_datasets_survive_pickling(tmp_path):
    """Loader workers started with ``spawn`` (macOS, Windows) receive the datasets pickled."""
    dm = folder_dm(make_image_folder(tmp_path / "photos"), mean=[0.5] * 3, std=[0.2, 0.3, 0.4])
    dm.setup("fit")
    assert dm.mean == (0.5, 0.5, 0.5) and dm.std == (0.2, 0.3, 0.4)  # given stats are kept
    for split in (dm.train_set, dm.val_set, dm.test_set):
        copy = pickle.loads(pickle.dumps(split))
        assert torch.equal(copy[0][0], split[0][0]) or split is dm.train_set  # train is augmented
        assert copy[0][1] == split[0][1]


def test_image_folder_split_folders_and_grayscale(tmp_path):
    root = tmp_path / "data"
    make_image_folder(root / "train", per_class=4)
    make_image_folder(root / "val", per_class=2)
    make_image_folder(root / "test", per_class=1, classes={"red": COLOURS["red"]})  # a subset is fine
    dm = folder_dm(root, channels=1)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (12, 6, 1)
    assert dm.test_set[0][1] == 2  # "red" keeps the training label even alone in test/
    assert dm.train_set[0][0].shape == (1, 16, 16) and dm.spec()["in_channels"] == 1


def test_image_folder_bad_layouts_name_the_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"image folder .*empty has no class sub-folders"):
        folder_dm(tmp_path / "empty").setup("fit")
    root = make_image_folder(tmp_path / "one_empty", per_class=2)
    (root / "yellow").mkdir()
    (root / "yellow" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"class folder .*one_empty/yellow has no images"):
        folder_dm(root).setup("fit")
    single = make_image_folder(tmp_path / "single", per_class=4, classes={"red": COLOURS["red"]})
    with pytest.raises(ValueError, match="has one class"):
        folder_dm(single).setup("fit")
    nested = tmp_path / "nested"
    make_image_folder(nested / "train", per_class=3)
    make_image_folder(nested / "val", per_class=1, classes={"purple": (120, 0, 120)})
    with pytest.raises(ValueError, match=r"class folders \['purple'\] that the training split does not have"):
        folder_dm(nested).setup("fit")
    mixed = make_image_folder(tmp_path / "mixed", per_class=2)
    make_image_folder(mixed / "test", per_class=1)  # a class named test, or a split without train/?
    with pytest.raises(ValueError, match=r"mixed has a 'test' folder but no 'train' folder: lay"):
        folder_dm(mixed).setup("fit")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        folder_dm(tmp_path / "nowhere").setup("fit")
    with pytest.raises(ValueError, match=r"data\.image_size is required"):
        ImageFolderDataModule(root=str(root))


def _corrupt(root: Path) -> tuple[Path, Path]:
    truncated = root / "red" / "truncated.png"
    data = (root / "red" / "1.png").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    garbage = root / "blue" / "garbage.jpg"
    garbage.write_bytes(b"this is not a jpeg at all" * 10)
    return truncated, garbage


def test_corrupt_image_error_names_the_file(tmp_path):
    root = make_image_folder(tmp_path / "photos", per_class=3)
    truncated, garbage = _corrupt(root)
    # Estimating mean/std reads the training images at setup, so the error comes before training.
    with pytest.raises(
        ValueError, match=r"cannot read image .*(truncated.png|garbage.jpg): corrupt or truncated"
    ):
        folder_dm(root, val_size=1, test_size=1).setup("fit")
    dm = folder_dm(root, val_size=1, test_size=1, mean=[0.5] * 3, std=[0.25] * 3)
    dm.setup("fit")  # nothing decoded yet: the error comes with the first read of the file
    dataset = dm.train_set.dataset.dataset  # the ImageFolder under the two held-out splits
    index = [path for path, _ in dataset.samples].index(str(truncated))
    with pytest.raises(ValueError, match=rf"cannot read image {truncated}: corrupt or truncated"):
        dataset[index]
    index = [path for path, _ in dataset.samples].index(str(garbage))
    with pytest.raises(ValueError, match=rf"cannot read image {garbage}"):
        dataset[index]


def test_skip_corrupt_skips_and_counts(tmp_path):
    root = make_image_folder(tmp_path / "photos", per_class=3)
    truncated, garbage = _corrupt(root)
    dm = folder_dm(root, val_size=1, test_size=1, skip_corrupt=True)
    with pytest.warns(UserWarning, match="skipped 2 unreadable image"):
        dm.setup("fit")
    assert sorted(dm.skipped) == sorted([str(garbage), str(truncated)])
    assert len(dm.train_set) + len(dm.val_set) + len(dm.test_set) == 9
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        for images, _ in loader:
            assert torch.isfinite(images).all()


# -- prediction inputs, artifacts -------------------------------------------------------------------
def test_load_inputs_converts_or_refuses_channels(tmp_path):
    grey_model = mnist()  # 1 channel; no setup needed to predict
    digits = sorted((MNIST_FIXTURE / "png").glob("*.png"))
    batch = grey_model.load_inputs(digits)
    assert batch.shape == (2, 1, 28, 28)
    reference = mnist()
    reference.setup("test")
    assert torch.allclose(batch[0], reference.test_set[0][0])  # same preprocessing as evaluation

    colour = tmp_path / "colour.png"
    Image.fromarray(np.dstack([np.full((40, 30), v, np.uint8) for v in (250, 10, 10)])).save(colour)
    with pytest.raises(
        ValueError, match=rf"{colour} is a colour \(RGB\) image but the model reads 1-channel"
    ):
        grey_model.load_inputs([digits[0], colour])
    grey_as_rgb = tmp_path / "grey_rgb.jpg"
    Image.open(digits[0]).convert("RGB").resize((56, 56)).save(grey_as_rgb)
    rgba = tmp_path / "alpha.png"
    Image.open(digits[1]).convert("RGBA").save(rgba)
    assert grey_model.load_inputs([grey_as_rgb, rgba]).shape == (2, 1, 28, 28)  # unambiguous: converted

    rgb_model = CIFAR10DataModule(root=str(tmp_path))
    batch = rgb_model.load_inputs([digits[0], colour])  # grey → RGB is always safe
    assert batch.shape == (2, 3, 32, 32)
    assert torch.allclose(batch[0, 0] * 0.2470 + 0.4914, batch[0, 1] * 0.2435 + 0.4822, atol=1e-4)
    with pytest.raises(FileNotFoundError, match=r"missing\.png does not exist"):
        rgb_model.load_inputs([tmp_path / "missing.png"])
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(ValueError, match=r"cannot read image .*broken\.png"):
        rgb_model.load_inputs([tmp_path / "broken.png"])


def test_artifacts_round_trip_into_a_fresh_module(tmp_path):
    trained = folder_dm(make_image_folder(tmp_path / "photos"))
    trained.setup("fit")
    artifacts = trained.artifacts()
    fresh = folder_dm(tmp_path / "photos")
    fresh.use_artifacts(artifacts)
    assert fresh.classes == trained.classes and fresh.mean == trained.mean
    image = tmp_path / "photos" / "green" / "1.png"
    assert torch.allclose(fresh.load_inputs([image]), trained.load_inputs([image]))
    other = folder_dm(
        make_image_folder(tmp_path / "other", classes={"cyan": (0, 200, 200), "red": (200, 0, 0)})
    )
    other.use_artifacts(artifacts)
    with pytest.raises(ValueError, match=r"classes \['cyan', 'red'\].* checkpoint was trained on"):
        other.setup("test")


def test_labels_out_of_range_for_the_head():
    check_labels(torch.tensor([0, 9]), 10)
    with pytest.raises(ValueError, match=r"label 10 is out of range .*num_classes=10"):
        check_labels(torch.tensor([3, 10]), 10)
    with pytest.raises(ValueError, match=r"label -1 is out of range"):
        check_labels(torch.tensor([-1, 2]), 10)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "cifar100", "image_folder"])
def test_every_data_config_builds(name, tmp_path):
    cfg = compose_train(["task=image_classification", f"data={name}", f"data.root={tmp_path}"])
    dm = instantiate(cfg.data)
    assert dm.root == tmp_path and dm.image_size is not None and dm.num_workers >= 0
    if dm.mean is not None:  # named datasets know their statistics; folders estimate them at setup
        assert len(dm.transform(train=True).transforms) >= 4


# -- the in-memory fast path and the fused normalisation ---------------------------------------
def test_tensor_images_are_torchvisions_pixels(tmp_path, skip_md5):
    """MNIST and CIFAR items served from the uint8 arrays equal torchvision's own PIL path."""
    from torchvision.transforms import v2

    from omniformer.data.image_datasets import TensorImages

    to_image = v2.ToImage()
    mnist_raw = torchvision.datasets.MNIST(str(MNIST_FIXTURE), train=True, download=False)
    cifar_raw = torchvision.datasets.CIFAR10(str(write_cifar10(tmp_path)), train=True, download=False)
    for raw in (mnist_raw, cifar_raw):
        fast = TensorImages(raw)
        assert len(fast) == len(raw) and fast.classes == raw.classes
        for i in (0, 3, len(raw) - 1):
            image, label = fast[i]
            pil, expected_label = raw[i]
            assert torch.equal(image, to_image(pil)) and label == expected_label
    with pytest.raises(ValueError, match="expected uint8"):
        TensorImages(type("Fake", (), {"data": torch.zeros(2, 3), "targets": [0, 1]})())


def test_scale_normalize_matches_todtype_and_normalize():
    from torchvision.transforms import v2

    from omniformer.data.image_transforms import ScaleNormalize

    mean, std = [0.4914, 0.4822, 0.4465], [0.247, 0.2435, 0.2616]
    reference = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    pixels = torch.randint(0, 256, (3, 8, 5), dtype=torch.uint8)
    fused = ScaleNormalize(mean, std)
    assert torch.allclose(fused(pixels), reference(pixels), atol=1e-5)
    unit = pixels.float() / 255  # float input: already in [0, 1], only normalised
    assert torch.allclose(fused(unit), reference(unit), atol=1e-6)
    assert fused(pixels).dtype == torch.float32 and type(fused(pixels)) is torch.Tensor


def test_resize_if_needed_only_resizes_other_sizes():
    from omniformer.data.image_transforms import ResizeIfNeeded

    resize = ResizeIfNeeded((28, 28))
    same = torch.zeros(1, 28, 28, dtype=torch.uint8)
    assert resize(same) is same
    assert resize(torch.zeros(1, 32, 30, dtype=torch.uint8)).shape == (1, 28, 28)
