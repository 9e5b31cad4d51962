"""LightningDataModules: read real data formats, split, cache, and collate batches."""

from omniformer.data.audio import AudioFolderDataModule, SpeechCommandsDataModule, SpokenDigitsDataModule
from omniformer.data.image import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    FashionMNISTDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
)
from omniformer.data.text import TextDataModule

__all__ = [
    "AudioFolderDataModule",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "SpeechCommandsDataModule",
    "SpokenDigitsDataModule",
    "TextDataModule",
]
