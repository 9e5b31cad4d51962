"""Objectives: what a task computes from a batch — the loss, the outputs and the targets.

Each objective is written once and used everywhere a batch meets the model: the single-task
LightningModules (their ``model_step``), the members of a multi-task run, the diagnostics probe and
the benchmarks' hand-written loops. A new kind of task plugs in by subclassing :class:`Objective`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from omniformer.model import OmniModel
from omniformer.prefix_inputs import prefix_and_text
from omniformer.tasks.transcripts import Transcriber, generation_metrics


def check_labels(labels: Tensor, num_classes: int) -> None:
    """Raise one clear error if any label lies outside ``0 .. num_classes-1`` (the head's range)."""
    if labels.numel() == 0 or labels.is_floating_point():
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise ValueError(
            f"label {bad} is out of range for the classifier head (num_classes={num_classes}, valid "
            f"labels 0..{num_classes - 1}): the data has more classes than the model was built for; "
            "check data.* overrides, or that the checkpoint was trained on this dataset"
        )


class Objective:
    """What an objective provides: the loss of a batch and the metrics to report.

    Subclasses implement :meth:`step`; ``metrics`` builds the member's extra validation metrics
    (besides the loss, which the task tracks), ``evaluate`` feeds them.
    """

    def step(self, net: OmniModel, modality: str, head: str, batch: Any) -> tuple[Tensor, Tensor, Tensor]:
        """``(mean loss, outputs, targets)`` of one batch."""
        raise NotImplementedError

    def weight(self, targets: Tensor) -> int:
        """How many items the mean loss averages (tokens or samples): the validation loss's weight."""
        return int(targets.numel())

    def metrics(self, head: nn.Module) -> dict[str, Metric]:
        """Extra metrics by short name (``acc``), logged as ``<member>/val_<name>``."""
        return {}

    def metric_collection(self, head: nn.Module, prefix: str | None = None) -> MetricCollection:
        """:meth:`metrics` as one collection, named ``<prefix><name>``."""
        # No compute groups: metrics whose states merely start out alike (CER, WER) would share them.
        return MetricCollection(self.metrics(head), prefix=prefix, compute_groups=False)

    def evaluate(
        self,
        metrics: MetricCollection,
        net: OmniModel,
        modality: str,
        head: str,
        batch: Any,
        outputs: Tensor,
        targets: Tensor,
    ) -> None:
        """Feed one validation or test batch to the metrics, after :meth:`step` gave ``outputs`` and
        ``targets``; objectives whose metrics need the model again (generation) override this."""
        if len(metrics):
            metrics.update(outputs, targets)

    def check_member(self, key: str, modality: str, net: OmniModel) -> None:
        """Check ``net`` has what this objective needs as multi-task member ``key`` (``task.members.<name>``)
        reading ``modality``; raise ``ValueError`` naming the key otherwise."""

    def use_data(self, datamodule: Any, modality: str) -> None:
        """Take what the metrics need from the data module (a vocabulary) and check it fits; called
        when training or evaluation sets up (``datamodule`` may be ``None``)."""

    def derived(self, loss: Tensor) -> dict[str, Tensor]:
        """Values computed from the epoch's mean loss (perplexity)."""
        return {}

    def check(self, batch: Any, head: nn.Module) -> None:
        """Host-side checks of a batch before it moves to the device (labels in range)."""


class ClassificationLoss(Objective):
    """Cross-entropy on ``(inputs, labels)`` or ``(inputs, lengths, labels)`` batches; top-1 accuracy.

    Args:
        label_smoothing: cross-entropy label smoothing (Szegedy et al. 2016).
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def step(self, net: OmniModel, modality: str, head: str, batch: Any) -> tuple[Tensor, Tensor, Tensor]:
        inputs, *lengths, labels = batch
        extra = {"lengths": lengths[0]} if lengths else {}
        logits = net(modality, head, inputs, **extra)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        return loss, logits, labels

    def metrics(self, head: nn.Module) -> dict[str, Metric]:
        classes = getattr(head, "num_classes", None)
        if classes is None:
            raise ValueError(
                f"a classification member needs a head with num_classes, got {type(head).__name__}"
            )
        return {"acc": MulticlassAccuracy(classes, average="micro")}

    def check(self, batch: Any, head: nn.Module) -> None:
        if isinstance(batch, (tuple, list)) and len(batch) >= 2 and isinstance(batch[-1], Tensor):
            check_labels(batch[-1], head.num_classes)


class LanguageModelingLoss(Objective):
    """Next-token cross-entropy on ``(inputs, targets)`` id windows (causal attention); perplexity."""

    def step(self, net: OmniModel, modality: str, head: str, batch: Any) -> tuple[Tensor, Tensor, Tensor]:
        inputs, targets = batch
        logits = net(modality, head, inputs, causal=True)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        return loss, logits, targets

    def derived(self, loss: Tensor) -> dict[str, Tensor]:
        return {"ppl": torch.exp(loss)}


#: The target id :class:`PrefixLMLoss` gives prefix-free padding (``F.cross_entropy``'s default ignore).
IGNORE_INDEX = -100


class PrefixLMLoss(Objective):
    """Next-token cross-entropy on the text after a media prefix, on ``PairedBatch`` batches
    (:mod:`omniformer.data.paired_batch`): ``(media, media_lengths, text, text_lengths)``.

    The sequence is ``<modality> media </modality> text[:-1]``; the logits from the end marker on score
    ``text``. Only real text ids count (end of text included): the prefix has no targets and text
    padding is :data:`IGNORE_INDEX`, so the mean is over the batch's real text tokens.

    With ``eos_id`` and ``max_new_tokens`` set, validation and test also generate every item's text
    from its prefix alone and score it (:mod:`omniformer.tasks.transcripts`): metrics ``exact``,
    ``cer`` and ``wer``, as :class:`~omniformer.tasks.prefix_lm.PrefixLMTask` logs them.

    Args:
        text_modality: the tokenizer that embeds the text ids.
        eos_id: the end-of-text id generation stops at (``None``: no generation, loss only).
        max_new_tokens: the most ids a generation writes (the data's longest text, end included).
        temperature: of the scored generations (0 = greedy).
        top_k: sample among the k most likely ids (``None`` = all); only with ``temperature > 0``.
    """

    def __init__(
        self,
        text_modality: str = "text",
        *,
        eos_id: int | None = None,
        max_new_tokens: int | None = None,
        temperature: float = 0.0,
        top_k: int | None = None,
    ) -> None:
        self.text_modality = text_modality
        self.transcriber: Transcriber | None = None
        if (eos_id is None) != (max_new_tokens is None):
            raise ValueError(
                "a prefix LM scores generations with both eos_id and max_new_tokens set, or neither "
                f"(got eos_id={eos_id}, max_new_tokens={max_new_tokens})"
            )
        if eos_id is not None and max_new_tokens is not None:
            self.transcriber = Transcriber(eos_id, max_new_tokens, text_modality, temperature, top_k)

    def step(self, net: OmniModel, modality: str, head: str, batch: Any) -> tuple[Tensor, Tensor, Tensor]:
        media, media_lengths, text, text_lengths = batch
        seq = prefix_and_text(net, modality, media, media_lengths, text[:, :-1], self.text_modality)
        h = net.backbone(seq, causal=True)
        start = seq.x.shape[1] - text.shape[1]  # the end marker's column: it predicts text[:, 0]
        logits = net.heads[head](h, seq)[:, start:]
        real = torch.arange(text.shape[1], device=text.device)[None] < text_lengths.to(text.device)[:, None]
        targets = text.masked_fill(~real, IGNORE_INDEX)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX)
        return loss, logits, targets

    def weight(self, targets: Tensor) -> int:
        return int((targets != IGNORE_INDEX).sum())

    def metrics(self, head: nn.Module) -> dict[str, Metric]:
        return generation_metrics() if self.transcriber is not None else {}

    def check_member(self, key: str, modality: str, net: OmniModel) -> None:
        """A prefix-LM member needs its text tokenizer and sequence markers around its prefix."""
        if self.text_modality not in net.tokenizers:
            raise ValueError(
                f"{key}.loss.text_modality={self.text_modality!r}: no such tokenizer "
                f"(task.net.tokenizers: {', '.join(sorted(net.tokenizers))})"
            )
        markers = net.markers
        if markers is None or not markers.marks(modality) or self.text_modality not in markers.names:
            raise ValueError(
                f"{key}: a prefix-LM member needs task.net.markers to mark {modality!r} and know "
                f"{self.text_modality!r} (see conf/tasks/read_digits.yaml)"
            )

    def evaluate(
        self,
        metrics: MetricCollection,
        net: OmniModel,
        modality: str,
        head: str,
        batch: Any,
        outputs: Tensor,
        targets: Tensor,
    ) -> None:
        if self.transcriber is None or not len(metrics):
            return
        media, lengths, text, text_lengths = batch
        predictions = self.transcriber.transcribe(net, modality, head, media, lengths)
        metrics.update(predictions, self.transcriber.references(text, text_lengths))

    def use_data(self, datamodule: Any, modality: str) -> None:
        if self.transcriber is not None:
            self.transcriber.use_data(datamodule, modality)
