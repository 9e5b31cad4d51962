"""Image files beyond 8 bits and damaged MNIST IDX files: pixels are scaled by the file's own bit depth
(a 16-bit level of 60000 is 60000/65535, not clipped to 255), and a truncated IDX file is named."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from omniformer.data import CIFAR10DataModule, ImageFolderDataModule, MNISTDataModule
from omniformer.data.image_files import read_image
from omniformer.data.image_transforms import ScaleNormalize
from tests.helpers.paths import FIXTURES

DIM, BRIGHT = 1000, 60000  # two 16-bit grey levels that an 8-bit conversion both clips to 255


def write_png16(path: Path, pixels: np.ndarray) -> Path:
    """A 16-bit PNG of ``H×W`` (grey) or ``H×W×C`` (C = 2 grey+alpha, 3 RGB, 4 RGBA) ``pixels``.

    Written by hand because PIL saves 16-bit grey ("I;16") but not 16-bit colour PNGs.
    """
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    height, width, channels = pixels.shape
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def grey16_folder(root: Path, per_class: int = 3, size: int = 8) -> Path:
    """``root/{dim,bright}/<i>.png``: 16-bit grayscale PNGs saved by PIL (mode "I;16")."""
    for name, level in (("dim", DIM), ("bright", BRIGHT)):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((size, size), level, np.uint16)).save(root / name / f"{i}.png")
    return root


def folder(root: Path, **kwargs) -> ImageFolderDataModule:
    args = dict(root=str(root), image_size=8, patch_size=4, num_workers=0, val_size=1, test_size=1)
    return ImageFolderDataModule(**(args | kwargs))


# -- 16-bit images -----------------------------------------------------------------------------------
def test_16_bit_grey_classes_stay_apart_in_training_items_and_prediction(tmp_path):
    root = grey16_folder(tmp_path / "photos")
    assert Image.open(root / "dim" / "0.png").mode == "I;16"  # really a 16-bit file
    dm = folder(root, channels=1, mean=[0.0], std=[1.0], augment="none")  # the pixels as decoded
    dm.setup("fit")
    expected = {dm.classes.index("dim"): DIM / 65535, dm.classes.index("bright"): BRIGHT / 65535}
    seen = set()
    for split in (dm.train_set, dm.val_set, dm.test_set):
        for index in range(len(split)):
            image, label = split[index]
            assert image.shape == (1, 8, 8) and image.dtype == torch.float32
            torch.testing.assert_close(image, torch.full((1, 8, 8), expected[label]))
            seen.add(label)
    assert seen == {0, 1}
    batch = dm.load_inputs([root / "dim" / "0.png", root / "bright" / "0.png"])
    torch.testing.assert_close(batch[:, :, 0, 0], torch.tensor([[DIM / 65535], [BRIGHT / 65535]]))
    # An RGB model reads the grey file as three equal channels, still scaled by 65535.
    rgb = CIFAR10DataModule(root=str(tmp_path), image_size=8, patch_size=4, mean=[0.0] * 3, std=[1.0] * 3)
    bright = rgb.load_inputs([root / "bright" / "1.png"])
    torch.testing.assert_close(bright, torch.full((1, 3, 8, 8), BRIGHT / 65535))


def test_16_bit_stats_are_estimated_on_the_0_to_1_scale(tmp_path):
    dm = folder(grey16_folder(tmp_path / "photos", per_class=4), channels=1, val_size=0, test_size=0)
    dm.setup("fit")
    # Half dim, half bright: mean near (1000 + 60000) / 2 / 65535, not 1.0 (every pixel clipped to 255).
    assert dm.mean[0] == pytest.approx((DIM + BRIGHT) / 2 / 65535, abs=1e-3)
    assert dm.std[0] > 0.4


def test_16_bit_colour_png_keeps_each_channel_and_drops_alpha(tmp_path):
    colour = np.zeros((8, 8, 3), np.uint16)
    colour[..., 0], colour[..., 1], colour[..., 2] = BRIGHT, DIM, 30000
    rgb_file = write_png16(tmp_path / "rgb16.png", colour)
    rgba_file = write_png16(tmp_path / "rgba16.png", np.dstack([colour, np.full((8, 8), 123, np.uint16)]))
    grey_alpha = write_png16(tmp_path / "la16.png", np.dstack([np.full((8, 8), BRIGHT, np.uint16)] * 2))
    model = CIFAR10DataModule(root=str(tmp_path), image_size=8, patch_size=4, mean=[0.0] * 3, std=[1.0] * 3)
    batch = model.load_inputs([rgb_file, rgba_file, grey_alpha])
    want = torch.tensor([BRIGHT, DIM, 30000]) / 65535
    torch.testing.assert_close(batch[0, :, 3, 3], want)  # PIL alone gives the 8-bit 234, 3, 117
    torch.testing.assert_close(batch[1, :, 3, 3], want)
    torch.testing.assert_close(batch[2, :, 3, 3], torch.full((3,), BRIGHT / 65535))
    grey_model = MNISTDataModule(root=str(tmp_path), image_size=8, patch_size=4, mean=[0.0], std=[1.0])
    with pytest.raises(ValueError, match=r"rgb16\.png is a colour \(RGB\) image but the model reads 1-chan"):
        grey_model.load_inputs([rgb_file])
    grey_as_rgb = write_png16(tmp_path / "grey_rgb16.png", np.dstack([np.full((8, 8), DIM, np.uint16)] * 3))
    torch.testing.assert_close(grey_model.load_inputs([grey_as_rgb]), torch.full((1, 1, 8, 8), DIM / 65535))
    # A grayscale image folder (non-strict) mixes colour to grey with PIL's ITU-R 601-2 luma weights.
    luma = read_image(rgb_file, channels=1, strict=False)
    mixed = (0.299 * BRIGHT + 0.587 * DIM + 0.114 * 30000) / 65535
    torch.testing.assert_close(luma, torch.full((1, 8, 8), mixed))


def test_8_bit_images_are_read_exactly_as_before(tmp_path):
    """8-bit files keep the PIL path: same pixels, bit for bit, as PIL's conversion and ToImage."""
    rng = np.random.default_rng(0)
    (tmp_path / "photos" / "a").mkdir(parents=True)
    (tmp_path / "photos" / "b").mkdir()
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "photos" / "a" / "0.png")
    Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(tmp_path / "photos" / "b" / "0.png")
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "photos" / "b" / "1.jpg")
    for path in sorted((tmp_path / "photos").rglob("*.*")):
        for channels, mode in ((1, "L"), (3, "RGB")):
            image = read_image(path, channels, strict=False)
            assert isinstance(image, Image.Image) and image.mode == mode
            assert image.tobytes() == Image.open(path).convert(mode).tobytes()
    model = CIFAR10DataModule(root=str(tmp_path), image_size=8, patch_size=4)
    files = sorted((tmp_path / "photos").rglob("*.png"))
    reference = ScaleNormalize(model.mean, model.std)
    for path, got in zip(files, model.load_inputs(files)):
        assert torch.equal(got, reference(v2.ToImage()(Image.open(path).convert("RGB"))))


def test_32_bit_and_float_images_are_refused_by_name(tmp_path):
    path = tmp_path / "deep.tif"
    Image.fromarray(np.full((8, 8), 70000, np.int32)).save(path)
    with pytest.raises(ValueError, match=r"deep\.tif has 32-bit integer pixels"):
        read_image(path, channels=1, strict=True)
    floats = tmp_path / "float.tif"
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(floats)
    with pytest.raises(ValueError, match=r"float\.tif has 32-bit float pixels"):
        read_image(floats, channels=3, strict=False)


# -- MNIST IDX files ---------------------------------------------------------------------------------
def mnist_copy(tmp_path: Path) -> Path:
    root = tmp_path / "mnist"
    shutil.copytree(FIXTURES / "mnist" / "MNIST", root / "MNIST")
    return root


def test_truncated_mnist_file_is_named_with_expected_and_actual_size(tmp_path):
    root = mnist_copy(tmp_path)
    images = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    data = images.read_bytes()
    assert len(data) == 16 + 20 * 28 * 28
    images.write_bytes(data[:10_000])
    dm = MNISTDataModule(root=str(root), val_size=4, num_workers=0)
    with pytest.raises(ValueError, match=rf"{images}: .*20×28×28 .*15696 bytes.* holds 10000 bytes"):
        dm.setup("fit")
    images.write_bytes(data + b"\x00" * 7)  # extra bytes are as wrong as missing ones
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: .*15696 bytes.* holds 15703 bytes"):
        MNISTDataModule(root=str(root), val_size=4, num_workers=0).setup("fit")


def test_mnist_file_with_a_broken_header_is_named(tmp_path):
    root = mnist_copy(tmp_path)
    labels = root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    labels.write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte: not an IDX file .*2 bytes"):
        MNISTDataModule(root=str(root), val_size=4, num_workers=0).setup("fit")
    labels.write_bytes(b"GIF89a" + b"\x00" * 20)
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte: not an IDX file"):
        MNISTDataModule(root=str(root), val_size=4, num_workers=0).setup("fit")
