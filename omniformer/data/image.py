"""Image classification data: torchvision's MNIST, FashionMNIST, CIFAR-10/100 and ``ImageFolder``.

Every module reads the real on-disk format through torchvision's own dataset classes, holds out a
deterministic validation split from the training set (``data.val_size``, seeded by
``data.split_seed``, independent of the run's seed), and builds ``torchvision.transforms.v2``
pipelines from the config::

    decode → train_transforms / eval_transforms (named v2 transforms, from YAML)
           → Resize(image_size) (skipped when the size already matches)
           → scale to [0, 1] and Normalize(mean, std) (one fused step for uint8 pixels)

MNIST, FashionMNIST and CIFAR keep their pixels in memory as one uint8 array; samples are served
from it as tensors (:class:`TensorImages`, the same pixels torchvision's ``__getitem__`` gives),
skipping the per-sample PIL round trip, so the per-image work is the configured transforms.

``mean``/``std`` default to the dataset's published statistics (estimated from training images for
an ``ImageFolder``). Datasets are read from ``data.root``: ``$OMNIFORMER_DATA`` or
``~/.cache/omniformer/data`` unless set; with ``data.download=false`` (the default) missing files
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from PIL import Image, ImageChops
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets, tv_tensors
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import v2

from omniformer.data.idx import check_idx
from omniformer.data.image_files import deep_pixels, match_channels

CLASSES_FILE = "classes.json"
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


def load_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image file; one error naming the file if it is corrupt or truncated."""
    try:
        with open(path, "rb") as handle:
            image = Image.open(handle)
            image.load()  # decode now, so a truncated file fails here and not deep in a transform
    except FileNotFoundError:
        raise FileNotFoundError(f"image file {path} does not exist") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read image {path}: corrupt or truncated file ({err})") from None
    return image


def convert_channels(image: Image.Image, channels: int, path: str | Path, strict: bool) -> Image.Image:
    """``image`` as ``L`` (``channels=1``) or ``RGB`` (``channels=3``).

    Grey → RGB is always safe. Colour → grey happens only when ``strict`` is False (a dataset whose
    config asked for ``channels: 1``) or when the colour channels are all equal; otherwise it is an
    error naming ``path`` (a user's colour photo given to a grayscale model).
    """
    if image.mode in ("P", "PA", "RGBA", "LA", "CMYK", "YCbCr", "HSV", "LAB"):
        image = image.convert("RGB") if image.mode not in ("LA",) else image.convert("L")
    if channels == 3:
        return image.convert("RGB")
    if channels != 1:
        raise ValueError(f"data.channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if image.mode == "RGB" and strict:
        r, g, b = image.split()
        if ImageChops.difference(r, g).getbbox() or ImageChops.difference(r, b).getbbox():
            raise ValueError(
                f"{path} is a colour (RGB) image but the model reads 1-channel grayscale images; "
                "convert the file to grayscale first (the model never saw colour)"
            )
    return image.convert("L")


def read_image(path: str | Path, channels: int, strict: bool) -> Image.Image | tv_tensors.Image:
    """Decode ``path`` and convert it to ``channels``: 8-bit files as PIL images (:func:`convert_channels`),
    16-bit ones as float pixels in [0, 1] scaled by their bit depth (:mod:`.image_files`)."""
    image = load_image(path)
    pixels = deep_pixels(image, path)
    if pixels is not None:
        return match_channels(pixels, channels, path, strict)
    return convert_channels(image, channels, path, strict)


class TransformedSubset(Dataset):
    """The items ``indices`` of a dataset of ``(image, label)``, with ``transform`` applied to images."""

    def __init__(self, dataset: Dataset, indices: Sequence[int], transform: Callable) -> None:
        self.dataset, self.indices, self.transform = dataset, list(indices), transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.dataset[self.indices[index]]
        return self.transform(image), int(label)


class TensorImages(Dataset):
    """``(image, label)`` pairs served from a torchvision dataset's in-memory uint8 pixels.

    MNIST-style datasets keep ``data`` as an N×H×W tensor and CIFAR as an N×H×W×C array; items are
    the same pixels the dataset's own ``__getitem__`` returns, as a C×H×W ``tv_tensors.Image``
    instead of a PIL image (no per-sample PIL round trip). ``classes`` is the dataset's.
    """

    def __init__(self, dataset: Any) -> None:
        pixels = torch.as_tensor(dataset.data)
        if pixels.dtype != torch.uint8 or pixels.ndim not in (3, 4):
            raise ValueError(
                f"{type(dataset).__name__}.data is {tuple(pixels.shape)} {pixels.dtype}; expected uint8 "
                "N×H×W or N×H×W×C pixels"
            )
        self.images = pixels.unsqueeze(1) if pixels.ndim == 3 else pixels.permute(0, 3, 1, 2)
        self.targets = [int(t) for t in torch.as_tensor(dataset.targets).tolist()]
        if len(self.targets) != len(self.images):
            raise ValueError(
                f"{type(dataset).__name__} has {len(self.images)} images but {len(self.targets)} labels"
            )
        self.classes = list(getattr(dataset, "classes", []))

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[tv_tensors.Image, int]:
        # A copy, as PIL decoding gave: an in-place transform must not change the stored pixels.
        return tv_tensors.Image(self.images[index].clone()), self.targets[index]


class ResizeIfNeeded:
    """``v2.Resize(size)`` for images of another size; images already ``size`` pass untouched."""

    def __init__(self, size: Sequence[int]) -> None:
        self.size = [int(s) for s in size]
        self.resize = v2.Resize(self.size, antialias=True)

    def __call__(self, image: Any) -> Any:
        if list(v2.functional.get_size(image)) == self.size:
            return image
        return self.resize(image)

    def __repr__(self) -> str:
        return f"ResizeIfNeeded(size={self.size})"


class ScaleNormalize:
    """Pixels → float32 ``(x / max - mean) / std`` per channel, as ``v2.ToDtype(float32, scale=True)``
    followed by ``v2.Normalize(mean, std)``; uint8 images take one fused multiply-add."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]
        mean_t, std_t = torch.tensor(self.mean).view(-1, 1, 1), torch.tensor(self.std).view(-1, 1, 1)
        self.uint8_scale, self.shift = 1.0 / (255.0 * std_t), -mean_t / std_t
        self.generic = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)])

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if isinstance(image, torch.Tensor) and image.dtype == torch.uint8:
            pixels = image.as_subclass(torch.Tensor).to(torch.float32)
            return torch.addcmul(self.shift, pixels, self.uint8_scale)
        return self.generic(image).as_subclass(torch.Tensor)

    def __repr__(self) -> str:
        return f"ScaleNormalize(mean={self.mean}, std={self.std})"


def split_indices(n: int, val_size: float | int, seed: int, key: str = "data.val_size") -> tuple[list, list]:
    """Deterministic ``(kept, held_out)`` index lists; ``val_size`` is a count or a fraction of ``n``."""
    if isinstance(val_size, float) and 0 < val_size < 1:
        count = max(1, round(n * val_size))
    elif float(val_size).is_integer() and val_size >= 0:
        count = int(val_size)
    else:
        raise ValueError(f"{key}={val_size} must be a count or a fraction between 0 and 1")
    if count >= n:
        raise ValueError(f"{key}={val_size} holds out {count} of {n} training images; leave some to train on")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[count:]), sorted(order[:count])


class ImageDataModule(L.LightningDataModule):
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
        self.classes: list[str] | None = None
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
            val = TransformedSubset(source, val_idx, _identity)
        else:
            train_idx = list(range(len(source)))
        if self.mean is None or self.std is None:  # from training images only
            mean, std = self._estimate_stats(TransformedSubset(source, train_idx, _identity))
            self.mean, self.std = self.mean or mean, self.std or std
        train_tf, eval_tf = self.transform(train=True), self.transform(train=False)
        self.val_set = TransformedSubset(val, range(len(val)), eval_tf)
        self.train_set = TransformedSubset(source, train_idx, train_tf)
        self.test_set = None if test is None else TransformedSubset(test, range(len(test)), eval_tf)
        rank_zero_info(
            f"{self.display_name}: {len(self.train_set)} train / {len(self.val_set)} val / "
            f"{len(self.test_set) if self.test_set is not None else 0} test images, "
            f"{len(self.classes)} classes, {self.channels}×{self.image_size[0]}×{self.image_size[1]}"
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

    def spec(self) -> dict:
        """Sizes the model is built from: classes, channels, image and patch size, class names."""
        if self.classes is None:
            raise RuntimeError("spec() needs setup() first: the class names come from the data")
        return {
            "num_classes": len(self.classes),
            "in_channels": self.channels,
            "image_size": _as_size(self.image_size),
            "patch_size": _as_size(self.patch_size),
            "class_names": list(self.classes),
        }

    def artifacts(self) -> dict[str, str]:
        """``classes.json`` (class names in label order) and ``normalization.json`` (mean/std)."""
        if self.classes is None:
            raise RuntimeError("artifacts() needs setup() first")
        stats = {"mean": list(self.mean), "std": list(self.std)}
        return {CLASSES_FILE: json.dumps(self.classes), NORMALIZATION_FILE: json.dumps(stats)}

    def use_artifacts(self, artifacts: Mapping[str, str]) -> None:
        """Take back the class names and normalisation a checkpoint was trained with."""
        if CLASSES_FILE in artifacts:
            classes = json.loads(artifacts[CLASSES_FILE])
            if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
                raise ValueError(f"{CLASSES_FILE} must hold a JSON list of class names")
            self.classes = classes
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

    def _loader(self, dataset: Dataset | None, split: str, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"no {split} split: call setup() first")
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, "train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, "validation", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, "test", train=False)

    def _missing(self, folder: Path, files: Sequence[Path], layout: str) -> FileNotFoundError:
        """The one error for a dataset that is not on disk."""
        missing = [f for f in files if not f.is_file()]
        shown = ", ".join(str(f.relative_to(self.root)) for f in missing[:4])
        return FileNotFoundError(
            f"{self.display_name} not found: looked in {folder} for {layout} (missing: {shown}"
            f"{', ...' if len(missing) > 4 else ''}). Download it with data.download=true (needs "
            f"internet), or point data.root at a folder that holds it (default root: $OMNIFORMER_DATA "
            "or ~/.cache/omniformer/data)"
        )


class MNISTDataModule(ImageDataModule):
    """MNIST handwritten digits (LeCun et al. 1998): 60,000 train / 10,000 test, 28×28 grayscale.

    Read with ``torchvision.datasets.MNIST`` from ``<root>/MNIST/raw`` (the raw IDX files). The test
    split is the official test set; validation is held out of the training set. See
    :class:`ImageDataModule` for the arguments.
    """

    display_name = "MNIST"
    dataset_class: ClassVar[type] = datasets.MNIST
    native_size = (28, 28)
    native_channels = 1
    default_mean, default_std = (0.1307,), (0.3081,)

    def _raw_files(self) -> tuple[Path, list[Path]]:
        folder = self.root / self.dataset_class.__name__ / "raw"
        names = [os.path.splitext(os.path.basename(url))[0] for url, _ in self.dataset_class.resources]
        return folder, [folder / name for name in names]

    def prepare_data(self) -> None:
        if self.download:
            for train in (True, False):
                self.dataset_class(str(self.root), train=train, download=True)

    def _load_splits(self):
        if self.download:
            self.prepare_data()
        folder, files = self._raw_files()
        if not all(f.is_file() for f in files):
            raise self._missing(folder, files, "the raw IDX files")
        for file in files:  # torchvision's reshape error on a truncated file names no file
            check_idx(file)
        train = self.dataset_class(str(self.root), train=True, download=False)
        test = self.dataset_class(str(self.root), train=False, download=False)
        return TensorImages(train), TensorImages(test), None, list(train.classes)


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST (Xiao et al. 2017): 10 clothing classes, 60,000 / 10,000, 28×28 grayscale.

    Read with ``torchvision.datasets.FashionMNIST`` from ``<root>/FashionMNIST/raw``.
    """

    display_name = "FashionMNIST"
    dataset_class = datasets.FashionMNIST
    default_mean, default_std = (0.2860,), (0.3530,)


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10 (Krizhevsky 2009): 50,000 train / 10,000 test, 32×32 RGB, 10 classes.

    Read with ``torchvision.datasets.CIFAR10`` from ``<root>/cifar-10-batches-py`` (pickled batches;
    torchvision checks their md5 sums).
    """

    display_name = "CIFAR-10"
    dataset_class: ClassVar[type] = datasets.CIFAR10
    native_size = (32, 32)
    native_channels = 3
    default_mean, default_std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

    def _files(self) -> tuple[Path, list[Path]]:
        cls = self.dataset_class
        folder = self.root / cls.base_folder
        names = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        return folder, [folder / name for name in names]

    def prepare_data(self) -> None:
        if self.download:
            self.dataset_class(str(self.root), train=True, download=True)

    def _load_splits(self):
        if self.download:
            self.prepare_data()
        folder, files = self._files()
        if not all(f.is_file() for f in files):
            raise self._missing(folder, files, "the pickled python batches")
        try:
            train = self.dataset_class(str(self.root), train=True, download=False)
            test = self.dataset_class(str(self.root), train=False, download=False)
        except RuntimeError as err:  # the files are there, so the md5 check failed
            raise ValueError(
                f"{self.display_name} files in {folder} are corrupt or incomplete ({err}); delete the "
                "folder and download again with data.download=true"
            ) from None
        return TensorImages(train), TensorImages(test), None, list(train.classes)


class CIFAR100DataModule(CIFAR10DataModule):
    """CIFAR-100 (Krizhevsky 2009): 100 fine classes, 50,000 / 10,000, 32×32 RGB.

    Read with ``torchvision.datasets.CIFAR100`` from ``<root>/cifar-100-python``.
    """

    display_name = "CIFAR-100"
    dataset_class = datasets.CIFAR100
    default_mean, default_std = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


def _identity(image: Any) -> Any:
    return image


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
    (``val_size``, ``test_size``; deterministic). Images are converted to ``channels`` (1 or 3) and
    resized to ``image_size``; ``mean``/``std`` default to estimates from training images.

    Args:
        channels: 1 converts every image to grayscale, 3 to RGB.
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
        channels: int = 3,
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
        if channels not in (1, 3):
            raise ValueError(f"data.channels must be 1 (grayscale) or 3 (RGB), got {channels}")
        self._channels, self.test_size, self.skip_corrupt = channels, test_size, skip_corrupt
        self.extensions = tuple(e.lower() for e in extensions)
        self.skipped: list[str] = []

    @property
    def channels(self) -> int:
        return self._channels

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
        nested = (self.root / "train").is_dir()
        train_dir = self.root / "train" if nested else self.root
        classes = self._check_folder(train_dir, train=True)
        if self.classes is not None:
            self._adopt_classes(classes)
            classes = self.classes
        source = _FixedClassFolder(train_dir, classes, ImageReader(self._channels), self.extensions)
        val = test = None
        for split in ("val", "test"):
            folder = self.root / split
            if nested and folder.is_dir():
                self._check_folder(folder, train=False)
                dataset = _FixedClassFolder(folder, classes, ImageReader(self._channels), self.extensions)
                val, test = (dataset, test) if split == "val" else (val, dataset)
        if self.skip_corrupt:
            for dataset in (source, val, test):
                if dataset is not None:
                    self._drop_corrupt(dataset)
        if test is None:
            keep, held = split_indices(len(source), self.test_size, self.split_seed + 1, "data.test_size")
            test = TransformedSubset(source, held, _identity)
            source = TransformedSubset(source, keep, _identity)
        return source, test, val, classes

    def _drop_corrupt(self, dataset: datasets.ImageFolder) -> None:
        """Decode every image once; drop the unreadable ones from ``dataset`` and count them."""

        def readable(sample: tuple[str, int]) -> bool:
            try:
                load_image(sample[0])
            except ValueError:
                return False
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
