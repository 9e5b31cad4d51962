"""LightningDataModules: read real data formats, split, cache, and collate batches.

Configs and stored checkpoints name the data modules as ``omniformer.data.<ClassName>``.
"""

from omniformer.data.audio_datasets import SpeechCommandsDataModule, SpokenDigitsDataModule
from omniformer.data.audio_folder import AudioFolderDataModule
from omniformer.data.classification import ClassificationDataModule
from omniformer.data.image_datasets import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    FashionMNISTDataModule,
    MNISTDataModule,
)
from omniformer.data.image_folder import ImageFolderDataModule
from omniformer.data.text import TextDataModule
from omniformer.data.text_classification import TextClassificationDataModule

__all__ = [
    "AudioFolderDataModule",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "ClassificationDataModule",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "SpeechCommandsDataModule",
    "SpokenDigitsDataModule",
    "TextClassificationDataModule",
    "TextDataModule",
]
