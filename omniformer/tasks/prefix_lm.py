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

from torch import Tensor
from torchmetrics import MeanMetric, MetricCollection

from omniformer.model import OmniModel
from omniformer.prefix_inputs import check_data_fits
from omniformer.tasks.base import OmniTask
from omniformer.tasks.objectives import PrefixLMLoss
from omniformer.tasks.optim import OptimSettings
from omniformer.tasks.transcripts import Transcriber
from omniformer.tokenizers.vocab import Vocabulary


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
        # The objective generates and scores texts as a multi-task prefix member's does (one code path).
        self.objective = PrefixLMLoss(
            text_modality, eos_id=eos_id, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k
        )
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        # val_exact, val_cer, val_wer (test_*): the objective's generation metrics
        self.val_metrics = self.objective.metric_collection(net.heads[head], prefix="val_")
        self.test_metrics = self.objective.metric_collection(net.heads[head], prefix="test_")

    @property
    def transcriber(self) -> Transcriber:
        """The objective's generation settings and vocabulary (always set: eos_id and max_new_tokens are)."""
        assert self.objective.transcriber is not None
        return self.objective.transcriber

    @property
    def vocab(self) -> Vocabulary | None:
        """The data's vocabulary, which generations are decoded with."""
        return self.transcriber.vocab

    @vocab.setter
    def vocab(self, vocab: Vocabulary | None) -> None:
        self.transcriber.vocab = vocab

    def setup(self, stage: str) -> None:
        """Check the data holds this task's modality; take its vocabulary (generations are scored as
        text); check its first prefix and longest text fit ``model.max_seq_len`` before any step."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        self.objective.use_data(datamodule, self.modality)
        check_data_fits(self.net, self.modality, datamodule)

    def model_step(self, batch) -> tuple[Tensor, Tensor, Tensor]:
        """``(mean loss over real text ids, logits, targets)`` of a ``PairedBatch``; padding targets
        are ``-100``."""
        return self.objective.step(self.net, self.modality, self.head, batch)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        loss, _, _ = self.model_step(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=batch[0].shape[0])
        return loss

    def generate_ids(self, media: Tensor, lengths: Tensor | None = None, seed: int = 0) -> list[list[int]]:
        """Per item, the ids generated from its media alone, up to (not including) end of text."""
        return self.transcriber.generate_ids(self.net, self.modality, self.head, media, lengths, seed)

    def decode(self, ids: list[int]) -> str:
        """The text of ids (no end of text); needs the data's vocabulary."""
        return self.transcriber.decode(ids)

    def transcribe(self, media: Tensor, lengths: Tensor | None = None) -> list[str]:
        """The text generated for each item of a batch of media."""
        return self.transcriber.transcribe(self.net, self.modality, self.head, media, lengths)

    def _evaluate(self, batch, loss_metric: MeanMetric, metrics: MetricCollection) -> None:
        loss, outputs, targets = self.model_step(batch)
        loss_metric.update(loss, weight=self.objective.weight(targets))
        self.objective.evaluate(metrics, self.net, self.modality, self.head, batch, outputs, targets)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, self.val_loss, self.val_metrics)

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, self.test_loss, self.test_metrics)

    def _log_epoch(self, prefix: str, loss: MeanMetric, metrics: MetricCollection) -> None:
        shown = prefix == "val_"
        self.log(f"{prefix}loss", loss.compute(), prog_bar=shown)
        self.log_dict(metrics.compute(), prog_bar=shown)
        for metric in (loss, metrics):
            metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val_", self.val_loss, self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test_", self.test_loss, self.test_metrics)
