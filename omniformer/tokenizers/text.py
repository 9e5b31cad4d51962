"""Text tokenizer module: token ids → :class:`Tokens` through an embedding table."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from omniformer.tokens import Tokens


class TextEmbedding(nn.Module):
    """Embeds token ids (from a BPE or char vocabulary) into ``B×N×D`` tokens.

    Args:
        vocab_size: number of ids in the vocabulary.
        dim: width of the backbone's residual stream.
        max_len: the longest sequence; bounds the learned position table.
        learned_positions: add a learned absolute position embedding (GPT-2 style). Without it the
            tokenizer only reports 1-D positions and the backbone's rotary embedding uses them.
        dropout: dropout on the embedded tokens.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        max_len: int = 1024,
        learned_positions: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if vocab_size <= 0:
            raise ValueError(f"vocab_size must be positive, got {vocab_size}")
        self.vocab_size, self.max_len = vocab_size, max_len
        self.embedding = nn.Embedding(vocab_size, dim)
        nn.init.normal_(self.embedding.weight, std=0.02)
        self.position_embedding = nn.Embedding(max_len, dim) if learned_positions else None
        if self.position_embedding is not None:
            nn.init.normal_(self.position_embedding.weight, std=0.01)
        self.drop = nn.Dropout(dropout)

    def forward(
        self, ids: Tensor, mask: Tensor | None = None, start_pos: int = 0, lengths: Tensor | None = None
    ) -> Tokens:
        """Embed ``ids`` (``B×N`` integers); ``start_pos`` offsets positions when decoding with a cache.

        ``lengths`` (real tokens per row, for right-padded batches) sets ``Tokens.mask``: position
        ``j`` of row ``i`` is real when ``j < lengths[i]``. Give ``mask`` or ``lengths``, not both.
        """
        n = ids.shape[1]
        if lengths is not None:
            if mask is not None:
                raise ValueError("give the text tokenizer either mask= or lengths=, not both")
            lengths = torch.as_tensor(lengths, device=ids.device)
            if lengths.shape != (ids.shape[0],):
                raise ValueError(
                    f"lengths must have shape ({ids.shape[0]},) to match ids of shape {tuple(ids.shape)}, "
                    f"got {tuple(lengths.shape)}"
                )
            mask = torch.arange(n, device=ids.device)[None, :] < lengths[:, None]
        if start_pos + n > self.max_len:
            raise ValueError(f"text of {start_pos + n} tokens exceeds the tokenizer's max_len={self.max_len}")
        positions = torch.arange(start_pos, start_pos + n, device=ids.device).expand(ids.shape[0], n)
        x = self.embedding(ids)
        if self.position_embedding is not None:
            x = x + self.position_embedding(positions[0])
        return Tokens(self.drop(x), mask=mask, positions=positions)
