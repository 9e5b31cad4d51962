"""Classification of any modality: cross-entropy, top-1/top-5 accuracy and macro-F1.

Batches are ``(inputs, labels)`` or ``(inputs, lengths, labels)``; ``lengths`` (real samples per
item, for padded audio or text) is passed to the tokenizer, which turns it into a key-padding mask.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from omniformer.model import OmniModel
from omniformer.tasks.base import OmniTask
from omniformer.tasks.objectives import ClassificationLoss, check_labels
from omniformer.tasks.optim import OptimSettings


def classification_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """Top-1 and top-5 accuracy and macro-F1 as one collection with ``prefix`` (e.g. ``val_``)."""
    metrics = {
        "acc": MulticlassAccuracy(num_classes, average="micro"),
        "f1": MulticlassF1Score(num_classes, average="macro"),
    }
    if num_classes > 5:
        metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    return MetricCollection(metrics, prefix=prefix)


class ClassificationTask(OmniTask):
    """Classify inputs of one modality with a pooled head.

    Args:
        net: the model; needs a tokenizer for ``modality`` and a head named ``head``.
        optim: optimizer and schedule settings.
        modality: which tokenizer reads the inputs (``image``, ``audio``, ``text``...).
        num_classes: number of classes the head scores.
        head: which head classifies.
        label_smoothing: cross-entropy label smoothing (Szegedy et al. 2016).
        class_names: names of the classes, in label order (for reports and predictions).
    """

    def __init__(
        self,
        net: OmniModel,
        optim: OptimSettings,
        modality: str,
        num_classes: int,
        head: str = "classifier",
        label_smoothing: float = 0.0,
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__(net, optim)
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names given for num_classes={num_classes}")
        self.modality, self.head, self.num_classes = modality, head, num_classes
        self.label_smoothing = label_smoothing
        self.objective = ClassificationLoss(label_smoothing)
        self.class_names = list(class_names) if class_names is not None else None
        self.val_metrics = classification_metrics(num_classes, "val_")
        self.test_metrics = classification_metrics(num_classes, "test_")
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()

    def forward(self, inputs: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Class logits (``B×num_classes``) for a batch of inputs."""
        extra = {} if lengths is None else {"lengths": lengths}
        return self.net(self.modality, self.head, inputs, **extra)

    def setup(self, stage: str) -> None:
        """Refuse data whose class count differs from the head's before any step runs."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        spec = datamodule.spec() if datamodule is not None and hasattr(datamodule, "spec") else {}
        classes = spec.get("num_classes")
        if classes is not None and classes != self.num_classes:
            raise ValueError(
                f"the data has {classes} classes but the classifier head was built for num_classes="
                f"{self.num_classes}; labels would be out of range or meaningless"
            )

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """Check labels while they are still on the host (no device sync per step).

        Lightning warns about this hook whenever a data module is used; the entry points silence that
        warning (:mod:`omniformer.known_warnings`).
        """
        if isinstance(batch, (tuple, list)) and len(batch) >= 2 and isinstance(batch[-1], Tensor):
            check_labels(batch[-1], self.num_classes)
        return batch

    def model_step(self, batch) -> tuple[Tensor, Tensor, Tensor]:
        """``(mean cross-entropy, logits, labels)`` of an ``(inputs[, lengths], labels)`` batch."""
        return self.objective.step(self.net, self.modality, self.head, batch)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        loss, _, _ = self.model_step(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=batch[-1].shape[0])
        return loss

    def _evaluate(self, batch, metrics: MetricCollection, loss_metric: MeanMetric) -> None:
        loss, logits, labels = self.model_step(batch)
        metrics.update(logits, labels)
        loss_metric.update(loss, weight=labels.shape[0])

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics, self.val_loss)

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics, self.test_loss)

    def _log_epoch(self, metrics: MetricCollection, loss_metric: MeanMetric, prefix: str) -> None:
        self.log_dict(metrics.compute(), prog_bar=(prefix == "val_"))
        self.log(f"{prefix}loss", loss_metric.compute(), prog_bar=(prefix == "val_"))
        metrics.reset()
        loss_metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch(self.val_metrics, self.val_loss, "val_")

    def on_test_epoch_end(self) -> None:
        self._log_epoch(self.test_metrics, self.test_loss, "test_")

    def predict_step(self, batch, batch_idx: int) -> Tensor:
        inputs, *lengths = batch if isinstance(batch, (tuple, list)) else (batch,)
        return torch.softmax(self(inputs, lengths[0] if lengths else None).float(), dim=-1)
