"""LightningDataModules: read real data formats, split, cache, and collate batches."""

from omniformer.data.text import TextDataModule

__all__ = ["TextDataModule"]
