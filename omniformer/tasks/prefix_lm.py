"""Any modality in, text out: a prefix LM that reads audio or an image, then writes its text.

One sequence ``<audio> frames </audio> text`` (or ``<image> patches </image> text``) through the
shared backbone with prefix-LM attention (:mod:`omniformer.sequence`): the prefix is read
bidirectionally, the text causally, and the loss counts text ids only (:class:`PrefixLMLoss`). On
validation and test every item is also transcribed by generation from its prefix alone
(:func:`~omniformer.prefix_sampling.generate_after_prefix`, with the KV cache), and the generations are
scored against the reference texts: exact match, character error rate and word error rate
(``torchmetrics.text``), logged as ``val_exact``, ``val_cer``, ``val_wer`` (and ``test_*``), beside
``val_loss``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.text import CharErrorRate, WordErrorRate

from omniformer.model import OmniModel
from omniformer.prefix_inputs import media_prefix
from omniformer.prefix_sampling import generate_after_prefix
from omniformer.tasks.base import OmniTask
from omniformer.tasks.objectives import PrefixLMLoss
from omniformer.tasks.optim import OptimSettings
from omniformer.tokenizers.vocab import Vocabulary


def text_metrics(prefix: str) -> MetricCollection:
    """Character and word error rates of generated texts as one collection with ``prefix``."""
    return MetricCollection({"cer": CharErrorRate(), "wer": WordErrorRate()}, prefix=prefix)


class PrefixLMTask(OmniTask):
    """Write the text of a media prefix (transcribe a clip, read an image).

    Args:
        net: the model; needs a tokenizer for ``modality`` and for ``text_modality``, a head named
            ``head`` and sequence ``markers``.
        optim: optimizer and schedule settings.
        modality: what the prefix is (``audio`` or ``image``).
        eos_id: the end-of-text id (the data's ``eos_id``); generation stops at it.
        max_new_tokens: the most ids a generation writes (the data's longest text, end included).
        text_modality: which tokenizer embeds the text ids.
        head: which head scores the next id.
        temperature: of the generations scored on validation and test (0 = greedy).
        top_k: sample among the k most likely ids (``None`` = all); only with ``temperature > 0``.
    """

    def __init__(
        self,
        net: OmniModel,
        optim: OptimSettings,
        *,
        modality: str,
        eos_id: int,
        max_new_tokens: int,
        text_modality: str = "text",
        head: str = "lm",
        temperature: float = 0.0,
        top_k: int | None = None,
    ) -> None:
        super().__init__(net, optim)
        for name in (modality, text_modality):
            if name not in net.tokenizers:
                raise ValueError(
                    f"the model has no {name!r} tokenizer (it has {sorted(net.tokenizers)}); "
                    f"for {name} prefixes train with prefix={name}"
                )
        if head not in net.heads:
            raise ValueError(f"no head named {head!r}; configured: {sorted(net.heads)}")
        if net.markers is None:
            raise ValueError("a prefix LM needs sequence markers: set task.net.markers (SegmentMarkers)")
        if max_new_tokens < 1:
            raise ValueError(f"task.max_new_tokens={max_new_tokens} must be >= 1")
        self.modality, self.text_modality, self.head = modality, text_modality, head
        self.eos_id, self.max_new_tokens = eos_id, max_new_tokens
        self.temperature, self.top_k = temperature, top_k
        self.objective = PrefixLMLoss(text_modality)
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_exact, self.test_exact = MeanMetric(), MeanMetric()
        self.val_text, self.test_text = text_metrics("val_"), text_metrics("test_")
        self.vocab: Vocabulary | None = None

    def setup(self, stage: str) -> None:
        """Check the data holds this task's modality; take its vocabulary (generations are scored as
        text)."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        holds = getattr(datamodule, "modality", self.modality)
        if holds != self.modality:
            raise ValueError(
                f"the data holds {holds} pairs but the model reads {self.modality} prefixes; "
                f"train with prefix={holds}"
            )
        vocab = getattr(datamodule, "vocab", None)
        if vocab is not None:
            self.vocab = vocab

    def model_step(self, batch) -> tuple[Tensor, Tensor, Tensor]:
        """``(mean loss over real text ids, logits, targets)`` of a ``PairedBatch``; padding targets
        are ``-100``."""
        return self.objective.step(self.net, self.modality, self.head, batch)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        loss, _, _ = self.model_step(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=batch[0].shape[0])
        return loss

    @torch.no_grad()
    def generate_ids(self, media: Tensor, lengths: Tensor | None = None, seed: int = 0) -> list[list[int]]:
        """Per item, the ids generated from its media alone, up to (not including) end of text."""
        prefix = media_prefix(self.net, self.modality, media, lengths)
        empty = torch.zeros(media.shape[0], 0, dtype=torch.long, device=media.device)
        generator = None
        if self.temperature > 0:
            generator = torch.Generator(device=media.device).manual_seed(seed)
        out = generate_after_prefix(
            self.net,
            prefix,
            empty,
            self.max_new_tokens,
            markers=self.net.markers,
            temperature=self.temperature,
            top_k=self.top_k,
            text_modality=self.text_modality,
            head=self.head,
            stop_id=self.eos_id,
            generator=generator,
        )
        rows = []
        for ids in out.tolist():
            rows.append(ids[: ids.index(self.eos_id)] if self.eos_id in ids else ids)
        return rows

    def decode(self, ids: list[int]) -> str:
        """The text of ids (no end of text); needs the data's vocabulary."""
        if self.vocab is None:
            raise RuntimeError(
                "the prefix LM scores texts with the data's vocabulary: attach a paired data module"
            )
        return self.vocab.decode(i for i in ids if i < self.vocab.size)

    def transcribe(self, media: Tensor, lengths: Tensor | None = None) -> list[str]:
        """The text generated for each item of a batch of media."""
        return [self.decode(ids) for ids in self.generate_ids(media, lengths)]

    def _evaluate(self, batch, loss_metric: MeanMetric, exact: MeanMetric, metrics: MetricCollection) -> None:
        loss, _, targets = self.model_step(batch)
        loss_metric.update(loss, weight=self.objective.weight(targets))
        media, lengths, text, text_lengths = batch
        predictions = self.transcribe(media, lengths)
        references = [self.decode(row[: n - 1]) for row, n in zip(text.tolist(), text_lengths.tolist())]
        hits = torch.tensor([float(p == r) for p, r in zip(predictions, references)], device=loss.device)
        exact.update(hits)
        metrics.update(predictions, references)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, self.val_loss, self.val_exact, self.val_text)

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, self.test_loss, self.test_exact, self.test_text)

    def _log_epoch(self, prefix: str, loss: MeanMetric, exact: MeanMetric, metrics: MetricCollection) -> None:
        shown = prefix == "val_"
        self.log(f"{prefix}loss", loss.compute(), prog_bar=shown)
        self.log(f"{prefix}exact", exact.compute(), prog_bar=shown)
        self.log_dict(metrics.compute(), prog_bar=shown)
        for metric in (loss, exact, metrics):
            metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val_", self.val_loss, self.val_exact, self.val_text)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test_", self.test_loss, self.test_exact, self.test_text)
