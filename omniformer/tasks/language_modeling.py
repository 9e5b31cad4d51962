"""Next-token prediction: cross-entropy on shifted ids, validation loss and perplexity."""

from __future__ import annotations

import torch
from lightning.pytorch.utilities import rank_zero_info
from torchmetrics import MeanMetric

from omniformer.model import OmniModel
from omniformer.sampling import sample_text
from omniformer.tasks.base import OmniTask
from omniformer.tasks.objectives import LanguageModelingLoss
from omniformer.tasks.optim import OptimSettings


class LanguageModelingTask(OmniTask):
    """Causal language modelling on batches of ``(inputs, targets)`` id windows.

    Args:
        net: the model; needs a tokenizer for ``modality`` and a head named ``head``.
        optim: optimizer and schedule settings.
        modality: which tokenizer reads the ids.
        head: which head scores the next token.
        sample_prompt: text the end-of-fit sample starts from.
        sample_tokens: how many tokens the end-of-fit sample generates (0 = no sample).
        temperature: sampling temperature of that sample.
        top_k: keep only the k most likely tokens when sampling.
        context_len: the most tokens the model sees while sampling; set it to the training block
            size (positions beyond it were never trained). ``None`` = the backbone's ``max_seq_len``.
    """

    def __init__(
        self,
        net: OmniModel,
        optim: OptimSettings,
        modality: str = "text",
        head: str = "lm",
        sample_prompt: str = "\n",
        sample_tokens: int = 200,
        temperature: float = 0.8,
        top_k: int | None = 200,
        context_len: int | None = None,
    ) -> None:
        super().__init__(net, optim)
        self.modality, self.head = modality, head
        self.sample_prompt, self.sample_tokens = sample_prompt, sample_tokens
        self.temperature, self.top_k, self.context_len = temperature, top_k, context_len
        self.objective = LanguageModelingLoss()
        # Token-weighted, so the epoch value is the exact mean over the whole validation split.
        self.val_loss = MeanMetric()
        self.sample_text: str | None = None

    def model_step(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(mean next-token loss, logits, targets)`` of an ``(inputs, targets)`` window batch."""
        return self.objective.step(self.net, self.modality, self.head, batch)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, _, _ = self.model_step(batch)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        loss, _, targets = self.model_step(batch)
        self.val_loss.update(loss, weight=self.objective.weight(targets))

    def on_validation_epoch_end(self) -> None:
        loss = self.val_loss.compute()
        self.val_loss.reset()
        self.log("val_loss", loss, prog_bar=True, sync_dist=False)
        self.log("val_ppl", torch.exp(loss))

    def on_fit_end(self) -> None:
        vocab = getattr(self.trainer.datamodule, "vocab", None) if self._trainer is not None else None
        if vocab is None or self.sample_tokens <= 0:
            return
        self.sample_text = self.sample(vocab, self.sample_prompt, self.sample_tokens)
        rank_zero_info(f"--- sample ---\n{self.sample_text}\n--------------")

    def sample(self, vocab, prompt: str, max_new_tokens: int, seed: int = 0) -> str:
        """Generate ``max_new_tokens`` after ``prompt`` with this task's temperature and top-k."""
        return sample_text(
            self.net,
            vocab,
            prompt,
            max_new_tokens,
            self.temperature,
            self.top_k,
            seed,
            self.modality,
            self.head,
            window=self.context_len,
        )
