"""Data for tests: image folders written on the fly, and the bundled movie reviews as a data module."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from omniformer.data.text_classification import TextClassificationDataModule
from tests.helpers.paths import FIXTURES

REVIEWS = FIXTURES / "movie_reviews"
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (20, 40, 210)}


def make_image_folder(root: Path, per_class: int = 6, classes=COLOURS, size=(20, 16)) -> Path:
    """``root/<colour>/<i>.png|jpg``: noisy images of one colour per class, PNG and JPEG mixed."""
    rng = np.random.default_rng(0)
    for name, rgb in classes.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = rng.integers(-20, 20, size=(size[1], size[0], 3))
            pixels = np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)
            suffix = "png" if i % 2 else "jpg"
            Image.fromarray(pixels).save(folder / f"{i}.{suffix}")
    return root


def image_folder(root: Path, per_class: int = 14, size: int = 8) -> Path:
    """Two classes of random RGB images (class ``b`` has a bright left half), PNG files."""
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = (rng.random((size, size, 3)) * 255).astype("uint8")
            if name == "b":
                pixels[:, : size // 2] = 255
            Image.fromarray(pixels).save(root / name / f"{i:03d}.png")
    return root


def fixture_reviews(path: Path | None = None, **kwargs) -> TextClassificationDataModule:
    """A text-classification data module over the 6 bundled movie reviews (or the file or folder
    ``path``): 2 train / 2 val / 2 test, a 300-id BPE vocabulary, 32-token documents."""
    options = dict(vocab_size=300, max_length=32, val_fraction=0.34, test_fraction=0.34, batch_size=4)
    return TextClassificationDataModule(str(path or REVIEWS), **{**options, **kwargs})
