"""What every classification data module shares: class names, ``spec()``, artifacts and the loaders.

The image, audio and labelled-text data modules differ in how they read and split examples; they
share the rest here:

* ``classes`` — the class names in label order, found while setting up or taken from a checkpoint
  (``use_artifacts``) before it;
* ``spec()`` — ``num_classes`` and ``class_names``, plus the sizes the modality adds
  (:meth:`ClassificationDataModule.input_spec`);
* ``artifacts()`` / ``use_artifacts()`` — ``classes.json`` plus the modality's own files;
* the loaders — a subclass builds each split's ``DataLoader`` (:meth:`ClassificationDataModule.loader`);
  the training one is made resumable mid-epoch here (:func:`omniformer.resume.training_loader`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import lightning as L
from torch.utils.data import DataLoader

from omniformer.data.artifacts import CLASSES_FILE, classes_json, read_classes
from omniformer.data.split_loaders import SplitLoaders


class ClassificationDataModule(SplitLoaders, L.LightningDataModule):
    """A labelled dataset with train, validation and test splits, for a classifier.

    Subclasses implement ``setup`` (which sets :attr:`classes`) and :meth:`loader`, and may add to
    :meth:`input_spec`, :meth:`extra_artifacts` and :meth:`use_extra_artifacts`.
    """

    #: ``classes.json`` with non-ASCII names escaped (see :func:`~omniformer.data.artifacts.classes_json`).
    ascii_classes: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self.classes: list[str] | None = None

    # -- what subclasses provide (and loader(), see SplitLoaders) -------------------------------------
    def input_spec(self) -> dict:
        """Sizes of the inputs the model is built for (channels, image size, sample rate...)."""
        return {}

    def extra_artifacts(self) -> dict[str, str]:
        """Files besides ``classes.json`` that inference needs (vocabulary, normalisation...)."""
        return {}

    def use_extra_artifacts(self, artifacts: Mapping[str, str]) -> None:
        """Take back the files of :meth:`extra_artifacts` from a checkpoint."""

    # -- shared -----------------------------------------------------------------------------------
    def split_loader(self, split: str, train: bool, **options: Any) -> DataLoader:
        """A ``DataLoader`` over the ``train_set``, ``val_set`` or ``test_set`` a subclass's ``setup``
        made: ``batch_size`` and shuffled when ``train``, else ``eval_batch_size`` in order.
        ``options``: further ``DataLoader`` arguments (``collate_fn``, ``pin_memory``...)."""
        dataset = getattr(self, f"{split}_set", None)
        if dataset is None:
            raise RuntimeError(f"no {'validation' if split == 'val' else split} split: call setup() first")
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            num_workers=self.num_workers,
            **options,
        )

    def _classes(self, caller: str) -> list[str]:
        if self.classes is None:
            raise RuntimeError(
                f"{type(self).__name__}.{caller} needs setup() first: the classes come from the data"
            )
        return self.classes

    def spec(self) -> dict:
        """Sizes the model is built from: ``num_classes``, ``class_names`` and :meth:`input_spec`."""
        classes = self._classes("spec()")
        return {"num_classes": len(classes), "class_names": list(classes), **self.input_spec()}

    def artifacts(self) -> dict[str, str]:
        """``classes.json`` (class names in label order) and :meth:`extra_artifacts`."""
        classes = self._classes("artifacts()")
        return {CLASSES_FILE: classes_json(classes, self.ascii_classes), **self.extra_artifacts()}

    def use_artifacts(self, artifacts: Mapping[str, str]) -> None:
        """Take back the class order (and the other files) a checkpoint was trained with, before
        ``setup``: the data's own classes are then checked against them."""
        if CLASSES_FILE in artifacts:
            self.classes = read_classes(artifacts[CLASSES_FILE])
        self.use_extra_artifacts(artifacts)
