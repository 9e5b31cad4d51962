"""Padding collate functions: variable-length sequences to one right-padded batch with their lengths.

The model's tokenizers turn ``lengths`` into a key-padding mask, so the zeros added here are never
attended to nor pooled.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def pad_right(sequences: Sequence[Tensor], width: int | None = None, dtype: torch.dtype = torch.float32):
    """``(padded, lengths)``: 1-D ``sequences`` zero-padded (or cut) to ``width``, by default the longest.

    ``lengths`` are the sequences' own lengths, before any cut.
    """
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    width = width or int(lengths.max())
    out = torch.zeros(len(sequences), width, dtype=dtype)
    for row, sequence in enumerate(sequences):
        out[row, : min(len(sequence), width)] = sequence[:width]
    return out, lengths


class PadCollate:
    """Stack clips into a zero-padded batch.

    Args:
        fixed_samples: pad every clip to exactly this many samples and return ``(waveforms, labels)``;
            ``None`` pads to the batch's longest clip and returns ``(waveforms, lengths, labels)``.
    """

    def __init__(self, fixed_samples: int | None = None) -> None:
        self.fixed_samples = fixed_samples

    def __call__(self, batch: Sequence[tuple[Tensor, int]]) -> tuple[Tensor, ...]:
        waves, labels = zip(*batch)
        out, lengths = pad_right(waves, self.fixed_samples)
        labels = torch.tensor(labels, dtype=torch.long)
        if self.fixed_samples is not None:
            return out, labels
        return out, lengths, labels


def pad_batch(items: Sequence[tuple[Tensor, int]]) -> tuple[Tensor, Tensor, Tensor]:
    """Right-pad id sequences with 0 to the batch's longest: ``(ids B×N, lengths B, labels B)``."""
    ids, lengths = pad_right([ids for ids, _ in items], dtype=torch.long)
    return ids, lengths, torch.tensor([label for _, label in items], dtype=torch.long)
