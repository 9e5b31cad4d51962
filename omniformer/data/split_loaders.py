"""The three Lightning loader hooks of a data module with train, validation and test splits."""

from __future__ import annotations

from torch.utils.data import DataLoader

from omniformer.resume import training_loader


class SplitLoaders:
    """Mixin for a ``LightningDataModule`` (listed before it): ``train_dataloader`` (resumable
    mid-epoch, :func:`omniformer.resume.training_loader`), ``val_dataloader`` and ``test_dataloader``,
    all from the subclass's :meth:`loader`."""

    def loader(self, split: str, train: bool) -> DataLoader:
        """The ``DataLoader`` of ``split`` (``train``, ``val`` or ``test``); ``train`` = shuffled and
        augmented."""
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        """Shuffled, augmented training batches, resumable mid-epoch."""
        return training_loader(self, self.loader("train", train=True))

    def val_dataloader(self) -> DataLoader:
        return self.loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self.loader("test", train=False)
