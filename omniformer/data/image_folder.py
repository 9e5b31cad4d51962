"""Your own images, one sub-folder per class, read with ``torchvision.datasets.ImageFolder``."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from PIL import Image
from torchvision import datasets, tv_tensors
from torchvision.datasets.folder import IMG_EXTENSIONS

from omniformer.data.image import ImageDataModule, TransformedSubset, identity
from omniformer.data.image_augment import PRESETS, augment_steps, detect_channels, grey_image, preset_for
from omniformer.data.image_files import load_image, read_image
from omniformer.data.splits import split_folders, split_indices


class ImageReader:
    """``ImageFolder`` loader: decode a file (errors name it) and convert it to 1 or 3 channels.

    A small picklable object rather than a bound method or lambda, so loader workers started with
    ``spawn`` (macOS, Windows) can receive the dataset.
    """

    def __init__(self, channels: int) -> None:
        self.channels = channels

    def __call__(self, path: str) -> Image.Image | tv_tensors.Image:
        return read_image(path, self.channels, strict=False)


class HasExtension:
    """``is_valid_file`` for ``ImageFolder``: the file name ends with one of ``extensions``."""

    def __init__(self, extensions: tuple[str, ...]) -> None:
        self.extensions = extensions

    def __call__(self, path: str) -> bool:
        return path.lower().endswith(self.extensions)


class _FixedClassFolder(datasets.ImageFolder):
    """``ImageFolder`` whose label order is given (the training split's), not re-derived per folder."""

    def __init__(self, root: Path, classes: list[str], loader: Callable, extensions: tuple[str, ...]):
        self._given = classes
        super().__init__(str(root), loader=loader, is_valid_file=HasExtension(extensions))

    def find_classes(self, directory):
        present = class_folders(Path(directory))
        unknown = sorted(set(present) - set(self._given))
        if unknown:
            raise ValueError(
                f"{directory} has class folders {unknown} that the training split does not have "
                f"(training classes: {self._given})"
            )
        return list(self._given), {name: i for i, name in enumerate(self._given)}

    def make_dataset(self, directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        # Classes absent from a val/test folder are fine; empty class folders were rejected earlier.
        return super().make_dataset(directory, class_to_idx, extensions, is_valid_file, allow_empty=True)


def class_folders(folder: Path) -> list[str]:
    """Sorted names of the non-hidden sub-folders of ``folder`` (the classes of an image folder)."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


class ImageFolderDataModule(ImageDataModule):
    """Your own images, one sub-folder per class, read with ``torchvision.datasets.ImageFolder``.

    Layouts: ``root/<class>/<image>``, or ``root/train/<class>/...`` with optional ``root/val/`` and
    ``root/test/`` beside it. A split without its own folder is held out of the training images
    (``val_size``, ``test_size``; deterministic). Images are converted to ``channels`` and resized
    to ``image_size``; ``mean``/``std`` default to estimates from training images. Grey sources and
    the augmentation presets: :mod:`omniformer.data.image_augment`.

    Args:
        channels: 1 converts every image to grayscale, 3 to RGB; ``auto`` reads 1 channel when a
            sample of the training images is all grey, else 3 (logged with the count sampled).
        augment: training augmentation preset, ``photo`` (crop + flip), ``light`` (small shifts and
            rotations, no flip), ``none``, or ``auto``: ``photo`` for colour, ``light`` for grey
            sources. ``train_transforms`` are applied after the preset's.
        test_size: held-out test images (count or fraction) when there is no ``test/`` folder.
        skip_corrupt: check every image once at setup and skip (and count) unreadable ones instead
            of stopping at the first with an error that names it.
        extensions: file endings that count as images.
        **kwargs: see :class:`ImageDataModule`.
    """

    display_name = "image folder"

    def __init__(
        self,
        root: str | None = None,
        # Plain types, not Literal: the choices are check_config's (the config check skips a value
        # that misses its annotation when the data config has a schema).
        channels: int | str = "auto",
        augment: str = "auto",
        test_size: float | int = 0.1,
        skip_corrupt: bool = False,
        extensions: Sequence[str] = IMG_EXTENSIONS,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("image_size") is None:
            raise ValueError("data.image_size is required for an image folder (e.g. data.image_size=64)")
        if kwargs.get("download"):
            raise ValueError("data.download=true cannot fetch an image folder; copy your images to data.root")
        super().__init__(root=root, **kwargs)
        if root is None:
            raise ValueError("data.root must name the image folder (e.g. data.root=/my/photos)")
        if channels not in (1, 3, "auto"):
            raise ValueError(f"data.channels must be 1 (grayscale), 3 (RGB) or auto, got {channels!r}")
        preset_for(augment, 3)  # an unknown preset fails here, before any file is read
        self.channels_setting, self.augment = channels, augment
        # One reader for every split: auto detection sets its channels once the files are known.
        self._reader = ImageReader(3 if channels == "auto" else channels)
        self._channels: int | None = None if channels == "auto" else channels
        self.test_size, self.skip_corrupt = test_size, skip_corrupt
        self.extensions = tuple(e.lower() for e in extensions)
        self.extra_train_steps = self.train_steps  # data.train_transforms, after the preset's
        self.skipped: list[str] = []
        self._grey: dict[str, bool] = {}  # path → grey, for files skip_corrupt has decoded already

    @staticmethod
    def check_config(args: Mapping[str, Any]) -> list[str]:
        """The choices of ``channels`` and ``augment`` (see :mod:`omniformer.argument_checks`)."""
        problems = []
        if "channels" in args and args["channels"] not in (1, 3, "auto"):
            problems.append("{channels}: choose 1 (grayscale), 3 (RGB) or auto")
        if "augment" in args and args["augment"] not in ("auto", *PRESETS):
            problems.append("{augment}: choose auto, " + ", ".join(PRESETS))
        return problems

    @property
    def channels(self) -> int:
        if self._channels is None:
            raise RuntimeError("data.channels=auto is decided at setup() (or taken from a checkpoint)")
        return self._channels

    def use_extra_artifacts(self, artifacts: Mapping[str, str]) -> None:
        """As :meth:`ImageDataModule.use_extra_artifacts`; ``channels=auto`` takes the checkpoint's
        channel count (the length of its mean), so files are read as training read them."""
        super().use_extra_artifacts(artifacts)
        if self.channels_setting == "auto" and self.mean is not None:
            self._channels = self._reader.channels = len(self.mean)

    def _choose_channels(self, source: datasets.ImageFolder) -> None:
        """Decide ``channels=auto`` from a sample of the training files, and the augmentation preset."""
        if self._channels is None:
            paths = [path for path, _ in source.samples]
            channels, grey, sampled = detect_channels(paths, self.split_seed, self._grey)
            self._channels = self._reader.channels = channels
            kind = "grayscale: reading 1 channel" if channels == 1 else "not all grayscale: reading RGB"
            rank_zero_info(
                f"image folder: {grey} of {sampled} sampled training images are grey (mode L/1/I or "
                f"R=G=B), so the folder is {kind} (data.channels=auto; set 1 or 3 to choose)"
            )
        preset = preset_for(self.augment, self._channels)
        self.train_steps = augment_steps(preset, self.image_size) + self.extra_train_steps
        if self.augment == "auto":
            rank_zero_info(f"image folder: data.augment=auto chose the {preset!r} preset")

    def _check_folder(self, folder: Path, train: bool) -> list[str]:
        """Class names of ``folder``; errors for no classes or an empty class folder."""
        names = class_folders(folder)
        if not names:
            raise ValueError(
                f"image folder {folder} has no class sub-folders; expected {folder}/<class>/<image> "
                "(e.g. cats/001.jpg, dogs/002.png)"
            )
        for name in names:
            has_image = any(
                f.name.lower().endswith(self.extensions) for f in (folder / name).rglob("*") if f.is_file()
            )
            if not has_image:
                raise ValueError(
                    f"class folder {folder / name} has no images (looked for {', '.join(self.extensions)})"
                )
        if train and len(names) < 2:
            raise ValueError(f"image folder {folder} has one class ({names[0]}); a classifier needs two")
        return names

    def _load_splits(self):
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder data.root={self.root} does not exist")
        folders = split_folders(self.root, "image") or {}
        train_dir = folders.get("train", self.root)
        classes = self._check_folder(train_dir, train=True)
        if self.classes is not None:
            self._adopt_classes(classes)
            classes = self.classes
        source = _FixedClassFolder(train_dir, classes, self._reader, self.extensions)
        val = test = None
        for split in ("val", "test"):
            folder = folders.get(split)
            if folder is not None:
                self._check_folder(folder, train=False)
                dataset = _FixedClassFolder(folder, classes, self._reader, self.extensions)
                val, test = (dataset, test) if split == "val" else (val, dataset)
        if self.skip_corrupt:
            for dataset in (source, val, test):
                if dataset is not None:
                    self._drop_corrupt(dataset)
        self._choose_channels(source)
        if test is None:
            keep, held = split_indices(len(source), self.test_size, self.split_seed + 1, "data.test_size")
            test = TransformedSubset(source, held, identity)
            source = TransformedSubset(source, keep, identity)
        return source, test, val, classes

    def _drop_corrupt(self, dataset: datasets.ImageFolder) -> None:
        """Decode every image once; drop the unreadable ones from ``dataset`` and count them (and, for
        ``channels=auto``, note which are grey, so detection opens none of them again)."""

        def readable(sample: tuple[str, int]) -> bool:
            try:
                image = load_image(sample[0])
            except ValueError:
                return False
            if self._channels is None:  # channels=auto: note what detection would open the file for
                self._grey[sample[0]] = grey_image(image)
            return True

        with ThreadPoolExecutor(max_workers=max(1, self.num_workers)) as pool:
            ok = list(pool.map(readable, dataset.samples))
        bad = [path for (path, _), good in zip(dataset.samples, ok) if not good]
        if bad:
            self.skipped += bad
            dataset.samples = [s for s, good in zip(dataset.samples, ok) if good]
            dataset.imgs, dataset.targets = dataset.samples, [label for _, label in dataset.samples]
            rank_zero_warn(
                f"skipped {len(bad)} unreadable image(s) in {dataset.root} (data.skip_corrupt=true): "
                f"{', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''}"
            )
