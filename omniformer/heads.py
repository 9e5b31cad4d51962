"""Task heads: map the backbone's residual stream to what a task predicts."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from omniformer.tokens import Tokens

PoolKind = Literal["cls", "mean"]


class LMHead(nn.Module):
    """Next-token logits over the vocabulary; optionally shares its weight with a text embedding.

    Args:
        dim: width of the residual stream.
        vocab_size: number of ids to score.
        tie_to: name of the tokenizer whose embedding this head reuses (weight tying, Press & Wolf
            2017), or ``None`` for an untied projection.
    """

    def __init__(self, dim: int, vocab_size: int, tie_to: str | None = "text") -> None:
        super().__init__()
        self.tie_to = tie_to
        self.proj = nn.Linear(dim, vocab_size, bias=False)
        nn.init.normal_(self.proj.weight, std=0.02)

    def tie(self, embedding: nn.Embedding) -> None:
        """Make this head's projection the very same parameter as ``embedding.weight``."""
        if embedding.weight.shape != self.proj.weight.shape:
            raise ValueError(
                f"cannot tie LM head {tuple(self.proj.weight.shape)} to embedding "
                f"{tuple(embedding.weight.shape)}: vocab size or width differ"
            )
        self.proj.weight = embedding.weight

    def forward(self, h: Tensor, tokens: Tokens | None = None) -> Tensor:
        return self.proj(h)


class ClassificationHead(nn.Module):
    """Class logits from a pooled sequence: the CLS token or the mean over real (unmasked) tokens.

    Args:
        dim: width of the residual stream.
        num_classes: number of classes.
        pool: ``"cls"`` (first token; the tokenizer must prepend one) or ``"mean"`` (masked mean).
        dropout: dropout before the linear classifier.
    """

    def __init__(self, dim: int, num_classes: int, pool: PoolKind = "mean", dropout: float = 0.0) -> None:
        super().__init__()
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool={pool!r} is not a pooling; choose 'cls' or 'mean'")
        if num_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got num_classes={num_classes}")
        self.pool, self.num_classes = pool, num_classes
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(dim, num_classes)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: Tensor, tokens: Tokens | None = None) -> Tensor:
        mask = tokens.mask if tokens is not None else None
        pooled = h[:, 0] if self.pool == "cls" else masked_mean(h, mask)
        return self.proj(self.drop(pooled))


def masked_mean(h: Tensor, mask: Tensor | None) -> Tensor:
    """Mean over the sequence axis, counting only positions where ``mask`` is True."""
    if mask is None:
        return h.mean(dim=1)
    weights = mask.to(h.dtype).unsqueeze(-1)
    return (h * weights).sum(dim=1) / torch.clamp_min(weights.sum(dim=1), 1.0)
