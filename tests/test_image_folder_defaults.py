"""Image folders that are not colour photos (issue #17): grey sources are detected and read as one
channel, augmentation is a named preset chosen from that, and predict reads files as training did."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

import omniformer.data.image_augment as image_augment
import omniformer.data.image_folder as image_folder
from omniformer.config import ConfigError, check_train_config
from omniformer.data import ImageFolderDataModule
from omniformer.data.image_augment import GRAY_SAMPLE, augment_steps, detect_channels, is_grayscale
from omniformer.model_spec import build_input_reader, input_config
from tests.helpers.data import make_image_folder
from tests.helpers.runs import compose_train


def grey_folder(root: Path, per_class: int = 6, rgb_grey: int = 1) -> Path:
    """``root/{dark,light}/<i>.png``: 8-bit grey digits-like images; the first ``rgb_grey`` files of
    each class are saved as RGB with three equal channels (a grey scan saved as colour)."""
    rng = np.random.default_rng(0)
    for name, level in (("dark", 40), ("light", 200)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(level + rng.integers(-20, 20, size=(16, 16)), 0, 255).astype(np.uint8)
            image = Image.fromarray(pixels)
            (image.convert("RGB") if i < rgb_grey else image).save(root / name / f"{i}.png")
    return root


def folder(root: Path, **kwargs) -> ImageFolderDataModule:
    args = {"root": str(root), "image_size": 16, "patch_size": 8, "num_workers": 0, "val_size": 2}
    return ImageFolderDataModule(**(args | {"test_size": 2} | kwargs))


def messages_of(monkeypatch) -> list[str]:
    said: list[str] = []
    monkeypatch.setattr(image_folder, "rank_zero_info", said.append)
    return said


def test_a_grey_folder_is_read_as_one_channel_with_the_light_preset(tmp_path, monkeypatch):
    said = messages_of(monkeypatch)
    dm = folder(grey_folder(tmp_path / "scans"))
    dm.setup("fit")
    assert dm.channels == 1 and dm.spec()["in_channels"] == 1 and len(dm.mean) == 1
    assert dm.train_set[0][0].shape == (1, 16, 16) and dm.test_set[0][0].shape == (1, 16, 16)
    assert "12 of 12 sampled training images are grey" in said[0] and "reading 1 channel" in said[0]
    assert any("chose the 'light' preset" in line for line in said)
    kinds = [type(step) for step in dm.train_steps]
    assert kinds == [v2.RandomAffine]  # small shifts and rotations, never a flip


def test_skip_corrupt_decodes_each_file_once_for_grey_detection_too(tmp_path, monkeypatch):
    """data.skip_corrupt decodes every image at setup; detection uses what it saw, opening none again."""
    said = messages_of(monkeypatch)
    opened: list[str] = []
    monkeypatch.setattr(image_augment, "is_grayscale", lambda path: opened.append(path) or True)
    dm = folder(grey_folder(tmp_path / "scans"), skip_corrupt=True)
    dm.setup("fit")
    assert opened == [] and dm.channels == 1
    assert "12 of 12 sampled training images are grey" in said[0]


def test_a_colour_folder_keeps_rgb_and_the_photo_preset(tmp_path, monkeypatch):
    said = messages_of(monkeypatch)
    dm = folder(make_image_folder(tmp_path / "photos", per_class=4))
    dm.setup("fit")
    assert dm.channels == 3 and "0 of 12 sampled training images are grey" in said[0]
    kinds = [type(step) for step in dm.train_steps]
    assert kinds == [v2.RandomResizedCrop, v2.RandomHorizontalFlip]  # what image_folder.yaml always did


def test_one_colour_image_among_grey_ones_keeps_rgb(tmp_path, monkeypatch):
    said = messages_of(monkeypatch)
    root = grey_folder(tmp_path / "mixed")
    Image.fromarray(np.full((16, 16, 3), (200, 10, 10), np.uint8)).save(root / "dark" / "red.png")
    dm = folder(root)
    dm.setup("fit")
    assert dm.channels == 3 and "12 of 13 sampled" in said[0] and "not all grayscale" in said[0]


def test_explicit_channels_and_presets_win(tmp_path):
    dm = folder(grey_folder(tmp_path / "scans"), channels=3, augment="none")
    dm.setup("fit")
    assert dm.channels == 3 and dm.train_steps == []
    extra = {"jitter": v2.ColorJitter(brightness=0.1)}
    dm = folder(tmp_path / "scans", channels=1, augment="photo", train_transforms=extra)
    dm.setup("fit")
    assert [type(s) for s in dm.train_steps] == [
        v2.RandomResizedCrop,
        v2.RandomHorizontalFlip,
        v2.ColorJitter,
    ]


@pytest.mark.slow
def test_bad_channels_and_presets_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"data\.augment='flip'; choose auto, photo, light, none"):
        folder(tmp_path, augment="flip")
    with pytest.raises(ValueError, match=r"data\.channels must be 1 \(grayscale\), 3 \(RGB\) or auto"):
        folder(tmp_path, channels=2)
    with pytest.raises(RuntimeError, match=r"channels=auto is decided at setup"):
        _ = folder(tmp_path).channels
    with pytest.raises(ValueError, match=r"data\.augment='mirror'"):
        augment_steps("mirror", (16, 16))
    cfg = compose_train(
        ["task=image_classification", "data=image_folder", "data.root=/x", "data.augment=flip"]
    )
    with pytest.raises(ConfigError, match=r"data\.augment='flip'"):
        check_train_config(cfg)


def test_detection_samples_a_fixed_subset_and_reads_modes(tmp_path):
    paths = []
    for i in range(GRAY_SAMPLE + 10):
        Image.fromarray(np.full((4, 4), i, np.uint8)).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    assert detect_channels(paths, seed=0) == (1, GRAY_SAMPLE, GRAY_SAMPLE)
    Image.new("1", (4, 4)).save(tmp_path / "bits.png")
    Image.new("P", (4, 4)).save(tmp_path / "palette.png")  # black palette entry: grey
    Image.new("RGBA", (4, 4), (9, 9, 9, 128)).save(tmp_path / "alpha.png")
    assert all(is_grayscale(str(tmp_path / n)) for n in ("bits.png", "palette.png", "alpha.png"))
    Image.new("RGB", (4, 4), (9, 9, 10)).save(tmp_path / "tinted.png")
    assert not is_grayscale(str(tmp_path / "tinted.png"))
    assert detect_channels([], seed=0) == (3, 0, 0)


def test_predict_reads_files_as_the_grey_training_did(tmp_path):
    """The stored data config says channels=auto; the model folder's reader takes the channel count
    from the checkpoint's normalisation, so a file is read exactly as evaluation read it."""
    trained = folder(grey_folder(tmp_path / "scans"))
    trained.setup("fit")
    config = {"_target_": "omniformer.data.ImageFolderDataModule", "root": str(tmp_path / "scans")}
    config |= {"image_size": 16, "patch_size": 8, "channels": "auto", "augment": "auto", "num_workers": 0}
    reader = build_input_reader(input_config(config), tmp_path / "model", trained.artifacts())
    assert reader.channels == 1
    file = tmp_path / "scans" / "light" / "0.png"  # saved as RGB with equal channels
    batch = reader.load_inputs([file])
    assert batch.shape == (1, 1, 16, 16)
    assert torch.allclose(batch, trained.load_inputs([file]))
    copy = pickle.loads(pickle.dumps(trained.train_set))  # spawn workers receive the shared reader
    assert copy[0][0].shape == (1, 16, 16)


@pytest.mark.slow
def test_image_folder_config_defaults_are_auto():
    cfg = compose_train(["task=image_classification", "data=image_folder", "data.root=/x"])
    assert cfg.data.channels == "auto" and cfg.data.augment == "auto" and cfg.data.train_transforms == {}
    check_train_config(cfg)
    check_train_config(
        compose_train(
            [
                "task=image_classification",
                "data=image_folder",
                "data.root=/x",
                "data.augment=light",
                "data.channels=1",
            ]
        )
    )
