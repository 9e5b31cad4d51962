"""Image classification data: what MNIST, FashionMNIST, CIFAR-10/100 and ``ImageFolder`` share.

The datasets live in :mod:`omniformer.data.image_datasets` and :mod:`omniformer.data.image_folder`.
Every module reads the real on-disk format through torchvision's own dataset classes, holds out a
deterministic validation split from the training set (``data.val_size``, seeded by
``data.split_seed``, independent of the run's seed), and builds ``torchvision.transforms.v2``
pipelines from the config::

    decode → train_transforms / eval_transforms (named v2 transforms, from YAML)
           → Resize(image_size) (skipped when the size already matches)
           → scale to [0, 1] and Normalize(mean, std) (one fused step for uint8 pixels)

``mean``/``std`` default to the dataset's published statistics (estimated from training images for
an ``ImageFolder``). Datasets are read from ``data.root``: the configs set it to ``paths.data_dir``
(``$OMNIFORMER_DATA``, else ``../shared/data``); built in Python without a root, ``$OMNIFORMER_DATA``
or ``~/.cache/omniformer/data``. With ``data.download=false`` (the default) missing files
raise one error saying where they were looked for and how to download them.

Grayscale vs RGB at prediction time (:meth:`ImageDataModule.load_inputs`): a grayscale file given to
an RGB model is converted (its three channels are equal, nothing is guessed); a colour file given
to a grayscale model is an error naming the file — unless its channels are all equal (a grey image
saved as RGB), which is converted. Palette and alpha images are converted to RGB first (alpha is
dropped). 16-bit files (PNG of any colour type, TIFF, PGM) are scaled by their own bit depth, to
float pixels in [0, 1], in training and prediction alike (:mod:`omniformer.data.image_files`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from omniformer.data.classification import ClassificationDataModule
from omniformer.data.image_files import read_image
from omniformer.data.image_transforms import ResizeIfNeeded, ScaleNormalize
from omniformer.data.locations import missing_hint
from omniformer.data.splits import split_indices

NORMALIZATION_FILE = "normalization.json"
#: Images read to estimate an ImageFolder's mean/std when none are configured.
STATS_SAMPLE = 512


def default_data_root() -> Path:
    """Where datasets live unless ``data.root`` says otherwise: ``$OMNIFORMER_DATA`` or
    ``~/.cache/omniformer/data``."""
    return Path(os.environ.get("OMNIFORMER_DATA", Path.home() / ".cache" / "omniformer" / "data"))


def _size_pair(value: int | Sequence[int] | None, key: str) -> tuple[int, int] | None:
    """``28`` → ``(28, 28)``, ``[32, 48]`` → ``(32, 48)``, ``None`` stays ``None``."""
    if value is None:
        return None
    pair = (int(value), int(value)) if isinstance(value, int) else tuple(int(v) for v in value)
    if len(pair) != 2 or min(pair) <= 0:
        raise ValueError(f"{key} must be a positive int or [height, width], got {value!r}")
    return pair


def _as_size(pair: tuple[int, int]) -> int | list[int]:
    """A square size as one int, otherwise ``[height, width]`` (how configs write sizes)."""
    return pair[0] if pair[0] == pair[1] else list(pair)


def _transform_steps(steps: Mapping[str, Any] | Sequence[Any] | None, key: str) -> list[Callable]:
    """Transforms from a mapping of name → transform (``null`` entries are skipped) or a list.

    Entries may be built objects (Hydra instantiates nested ``_target_`` nodes) or still configs.
    """
    if steps is None:
        return []
    items = list(steps.items()) if isinstance(steps, Mapping) else list(enumerate(steps))
    built = []
    for name, step in items:
        if step is None:
            continue
        if isinstance(step, Mapping) and "_target_" in step:
            from hydra.utils import instantiate

            step = instantiate(step)
        if not callable(step):
            raise ValueError(f"{key}.{name} is not a transform (got {step!r}); give a _target_")
        built.append(step)
    return built


class TransformedSubset(Dataset):
    """The items ``indices`` of a dataset of ``(image, label)``, with ``transform`` applied to images."""

    def __init__(self, dataset: Dataset, indices: Sequence[int], transform: Callable) -> None:
        self.dataset, self.indices, self.transform = dataset, list(indices), transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.dataset[self.indices[index]]
        return self.transform(image), int(label)


class ImageDataModule(ClassificationDataModule):
    """Shared machinery of the image data modules: splits, v2 pipelines, loaders, spec, artifacts.

    Args:
        root: folder the dataset is read from (default :func:`default_data_root`).
        download: fetch the files when they are missing (needs internet).
        image_size: side (``int``) or ``[height, width]`` images are resized to; ``null`` = native.
        patch_size: patch side of the image tokenizer (reported in ``spec()`` for the task); must
            divide both sides of ``image_size``.
        batch_size: training images per batch.
        eval_batch_size: images per validation/test batch (default: ``batch_size``).
        val_size: images held out of the training set for validation: a count or a fraction.
        split_seed: seed of that split (fixed, so the validation set does not change with ``seed``).
        train_transforms: name → v2 transform applied to training images only (augmentation);
            ``null`` entries are skipped, so ``data.train_transforms.flip=null`` removes one.
        eval_transforms: name → v2 transform applied to validation/test/predict images.
        mean: per-channel normalisation mean (default: the dataset's statistics).
        std: per-channel normalisation std (default: the dataset's statistics).
        num_workers: loader worker processes.
        pin_memory: page-locked batches for faster host→GPU copies (default: when CUDA is available).
        persistent_workers: keep workers alive between epochs (when ``num_workers > 0``).
    """

    #: Human name used in messages.
    display_name: ClassVar[str] = "images"
    #: Native (height, width) and channels, when the dataset has fixed ones.
    native_size: ClassVar[tuple[int, int] | None] = None
    native_channels: ClassVar[int | None] = None
    #: Published per-channel mean and std of the training set.
    default_mean: ClassVar[tuple[float, ...] | None] = None
    default_std: ClassVar[tuple[float, ...] | None] = None

    def __init__(
        self,
        root: str | None = None,
        download: bool = False,
        image_size: int | Sequence[int] | None = None,
        patch_size: int | Sequence[int] = 4,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        val_size: float | int = 5000,
        split_seed: int = 0,
        train_transforms: Mapping[str, Any] | None = None,
        eval_transforms: Mapping[str, Any] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        num_workers: int = 2,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
    ) -> None:
        super().__init__()
        self.root = Path(root).expanduser() if root else default_data_root()
        self.download = bool(download)
        self.image_size = _size_pair(image_size, "data.image_size") or self.native_size
        self.patch_size = _size_pair(patch_size, "data.patch_size")
        if self.image_size is not None:
            self._check_patch(self.image_size)
        if batch_size < 1 or (eval_batch_size is not None and eval_batch_size < 1):
            raise ValueError(f"data.batch_size and data.eval_batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.val_size, self.split_seed = val_size, split_seed
        self.train_steps = _transform_steps(train_transforms, "data.train_transforms")
        self.eval_steps = _transform_steps(eval_transforms, "data.eval_transforms")
        self.mean = self.default_mean if mean is None else tuple(float(m) for m in mean)
        self.std = self.default_std if std is None else tuple(float(s) for s in std)
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"data.std must be positive, got {list(self.std)}")
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.persistent_workers = persistent_workers and num_workers > 0
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    # -- what subclasses provide ------------------------------------------------------------------
    @property
    def channels(self) -> int:
        """Channels of the images the model reads (1 grayscale, 3 RGB)."""
        return int(self.native_channels)

    def _load_splits(self) -> tuple[Dataset, Dataset, Dataset | None, list[str]]:
        """Raw datasets of ``(PIL image, label)``: train source, test, optional val, class names."""
        raise NotImplementedError

    # -- shared -----------------------------------------------------------------------------------
    def _check_patch(self, size: tuple[int, int]) -> None:
        ph, pw = self.patch_size
        if size[0] % ph or size[1] % pw:
            raise ValueError(
                f"data.image_size={_as_size(size)} is not divisible by data.patch_size="
                f"{_as_size(self.patch_size)}; pick a patch size that divides both sides "
                f"(or resize with data.image_size)"
            )

    def transform(self, train: bool) -> v2.Compose:
        """The v2 pipeline for training (with augmentation) or evaluation images."""
        if self.mean is None or self.std is None:
            raise RuntimeError("normalisation statistics are unknown until setup() or use_artifacts()")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(
                f"data.mean/data.std have {len(self.mean)}/{len(self.std)} values for "
                f"{self.channels}-channel images"
            )
        steps: list[Callable] = [v2.ToImage()]
        steps += self.train_steps if train else self.eval_steps
        steps += [ResizeIfNeeded(self.image_size), ScaleNormalize(self.mean, self.std)]
        return v2.Compose(steps)

    def setup(self, stage: str | None = None) -> None:
        """Read the dataset, split off validation, and attach the transforms."""
        if self.train_set is not None:
            return
        source, test, val, classes = self._load_splits()
        self._adopt_classes(classes)
        if val is None:
            train_idx, val_idx = split_indices(len(source), self.val_size, self.split_seed)
            val = TransformedSubset(source, val_idx, identity)
        else:
            train_idx = list(range(len(source)))
        if self.mean is None or self.std is None:  # from training images only
            mean, std = self._estimate_stats(TransformedSubset(source, train_idx, identity))
            self.mean, self.std = self.mean or mean, self.std or std
        train_tf, eval_tf = self.transform(train=True), self.transform(train=False)
        self.val_set = TransformedSubset(val, range(len(val)), eval_tf)
        self.train_set = TransformedSubset(source, train_idx, train_tf)
        self.test_set = None if test is None else TransformedSubset(test, range(len(test)), eval_tf)
        rank_zero_info(
            f"{self.display_name}: {len(self.train_set)} train / {len(self.val_set)} val / "
            f"{len(self.test_set) if self.test_set is not None else 0} test images, "
            f"{len(self.classes)} classes, {self.channels}×{self.image_size[0]}×{self.image_size[1]}, "
            f"read from {self.root.resolve()}"
        )

    def _adopt_classes(self, classes: list[str]) -> None:
        """Take the dataset's class names, or check them against the ones a checkpoint was trained on."""
        if self.classes is not None and list(classes) != list(self.classes):
            raise ValueError(
                f"{self.display_name} under {self.root} has classes {list(classes)[:10]}... "
                f"({len(classes)}) but the checkpoint was trained on {self.classes[:10]}... "
                f"({len(self.classes)}); labels would not mean the same thing"
            )
        self.classes = list(classes)

    def _estimate_stats(self, source: Dataset) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std of up to :data:`STATS_SAMPLE` training images (fixed sample)."""
        order = torch.randperm(len(source), generator=torch.Generator().manual_seed(self.split_seed))
        to_tensor = v2.Compose(
            [v2.ToImage(), v2.Resize(list(self.image_size), antialias=True), v2.ToDtype(torch.float32, True)]
        )
        pixels = torch.stack([to_tensor(source[int(i)][0]) for i in order[:STATS_SAMPLE]])
        mean = pixels.mean(dim=(0, 2, 3))
        std = pixels.std(dim=(0, 2, 3)).clamp_min(1e-3)  # a constant channel must not divide by zero
        rank_zero_info(f"{self.display_name}: estimated mean {mean.tolist()} std {std.tolist()}")
        return tuple(round(float(m), 4) for m in mean), tuple(round(float(s), 4) for s in std)

    def input_spec(self) -> dict:
        """Channels, image size and patch size (the image tokenizer's sizes)."""
        return {
            "in_channels": self.channels,
            "image_size": _as_size(self.image_size),
            "patch_size": _as_size(self.patch_size),
        }

    def extra_artifacts(self) -> dict[str, str]:
        """``normalization.json``: the mean and std inputs are normalised with."""
        return {NORMALIZATION_FILE: json.dumps({"mean": list(self.mean), "std": list(self.std)})}

    def use_extra_artifacts(self, artifacts: Mapping[str, str]) -> None:
        """Take back the normalisation a checkpoint was trained with."""
        if NORMALIZATION_FILE in artifacts:
            stats = json.loads(artifacts[NORMALIZATION_FILE])
            self.mean, self.std = tuple(stats["mean"]), tuple(stats["std"])

    def load_inputs(self, paths: Sequence[str | Path]) -> torch.Tensor:
        """Read image files into one ``B×C×H×W`` batch with the evaluation transforms.

        Each image is converted to the model's channel count (see the module docstring for when that
        is an error) and resized to ``image_size``.
        """
        if not paths:
            raise ValueError("no input images given")
        if self.image_size is None:
            raise ValueError("data.image_size must be set to predict (the model's input size)")
        transform = self.transform(train=False)
        images = []
        for path in paths:
            images.append(transform(read_image(path, self.channels, strict=True)))
        return torch.stack(images)

    def loader(self, split: str, train: bool) -> DataLoader:
        return self.split_loader(
            split, train, pin_memory=self.pin_memory, persistent_workers=self.persistent_workers
        )

    def _missing(self, folder: Path, files: Sequence[Path], layout: str) -> FileNotFoundError:
        """The one error for a dataset that is not on disk."""
        missing = [f for f in files if not f.is_file()]
        shown = ", ".join(str(f.relative_to(self.root)) for f in missing[:4])
        return FileNotFoundError(
            f"{self.display_name} not found: looked in {folder} for {layout} (missing: {shown}"
            f"{', ...' if len(missing) > 4 else ''}). Download it with data.download=true (needs "
            f"internet), or point data.root at a folder that holds it; {missing_hint(self.root)}"
        )


def identity(image: Any) -> Any:
    """The transform that changes nothing (a picklable stand-in for ``lambda x: x``)."""
    return image
