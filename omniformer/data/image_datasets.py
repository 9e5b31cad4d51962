"""The published image datasets torchvision reads: MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100.

Each is read in its real on-disk format by torchvision's own dataset class; the test split is the
official test set. The pixels stay in memory as one uint8 array and are served from it as tensors
(:class:`TensorImages`, the same pixels torchvision's ``__getitem__`` gives), skipping the per-sample
PIL round trip, so the per-image work is the configured transforms.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import Dataset
from torchvision import datasets, tv_tensors

from omniformer.data.idx import check_idx
from omniformer.data.image import ImageDataModule


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
