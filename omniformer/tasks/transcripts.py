"""Write the text of a media prefix and score it: the generation and metrics every prefix LM shares.

:class:`PrefixLMTask <omniformer.tasks.prefix_lm.PrefixLMTask>` and the prefix-LM members of a
multi-task run (:class:`~omniformer.tasks.objectives.PrefixLMLoss` with generation settings) both
generate each item's text from its prefix alone (:func:`~omniformer.prefix_sampling.text_after_prefix`,
KV cache, greedy by default) and score it against the reference text: exact match (:class:`ExactMatch`),
character and word error rates (``torchmetrics.text``): :func:`generation_metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.text import CharErrorRate, WordErrorRate

from omniformer.model import OmniModel
from omniformer.prefix_inputs import media_prefix
from omniformer.prefix_sampling import text_after_prefix
from omniformer.tokenizers.vocab import Vocabulary


class ExactMatch(Metric):
    """The share of generated texts equal to their reference, on lists of strings (as CER and WER)."""

    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("hits", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Sequence[str], target: Sequence[str]) -> None:
        self.hits += sum(p == r for p, r in zip(preds, target, strict=True))
        self.total += len(target)

    def compute(self) -> Tensor:
        return (self.hits / self.total).float()


def generation_metrics() -> dict[str, Metric]:
    """Exact match, character and word error rates of generated texts, by short name; each is
    updated with ``(predictions, references)``."""
    return {"exact": ExactMatch(), "cer": CharErrorRate(), "wer": WordErrorRate()}


@dataclass
class Transcriber:
    """How a prefix LM writes texts for scoring: generation settings and the data's vocabulary.

    Attributes:
        eos_id: the end-of-text id (the data's ``eos_id``); generation stops at it.
        max_new_tokens: the most ids a generation writes (the data's longest text, end included).
        text_modality: the tokenizer that embeds the text ids.
        temperature: 0 = greedy; > 0 samples (seeded).
        top_k: sample among the k most likely ids (``None`` = all); only with ``temperature > 0``.
        vocab: the data's character vocabulary (from the paired data module or a checkpoint).
    """

    eos_id: int
    max_new_tokens: int
    text_modality: str = "text"
    temperature: float = 0.0
    top_k: int | None = None
    vocab: Vocabulary | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} must be >= 1")

    def use_data(self, datamodule: Any, modality: str) -> None:
        """Check ``datamodule`` holds ``modality`` pairs; take its vocabulary when it has one."""
        holds = getattr(datamodule, "modality", modality)
        if holds != modality:
            raise ValueError(
                f"the data holds {holds} pairs but the model reads {modality} prefixes; "
                f"train with prefix={holds}"
            )
        vocab = getattr(datamodule, "vocab", None)
        if vocab is not None:
            self.vocab = vocab

    @torch.no_grad()
    def generate_ids(
        self,
        net: OmniModel,
        modality: str,
        head: str,
        media: Tensor,
        lengths: Tensor | None = None,
        seed: int = 0,
    ) -> list[list[int]]:
        """Per item, the ids generated from its media alone, up to (not including) end of text."""
        return text_after_prefix(
            net,
            media_prefix(net, modality, media, lengths),
            torch.zeros(0, dtype=torch.long),
            self.max_new_tokens,
            stop_id=self.eos_id,
            text_modality=self.text_modality,
            head=head,
            temperature=self.temperature,
            top_k=self.top_k,
            seed=seed,
        )

    def transcribe(
        self, net: OmniModel, modality: str, head: str, media: Tensor, lengths: Tensor | None = None
    ) -> list[str]:
        """The text generated for each item of a batch of media (greedy, or sampled with seed 0)."""
        return [self.decode(ids) for ids in self.generate_ids(net, modality, head, media, lengths)]

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ids (no end of text); needs the data's vocabulary."""
        if self.vocab is None:
            raise RuntimeError(
                "the prefix LM scores texts with the data's vocabulary: attach a paired data module"
            )
        return self.vocab.decode(i for i in ids if i < self.vocab.size)

    def references(self, text: Tensor, text_lengths: Tensor) -> list[str]:
        """The reference texts of a ``PairedBatch``'s ``text`` ids (their end of text dropped)."""
        return [self.decode(row[: n - 1]) for row, n in zip(text.tolist(), text_lengths.tolist())]
