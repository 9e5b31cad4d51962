"""Batches of (media, text) pairs for a prefix LM: padded media with lengths, text ids ending in end-of-text.

A :class:`PairedBatch` is a named tuple, so Lightning moves it to the device as it is:

* ``media``: audio ``B×T`` float waveforms, right-padded with zeros; or images ``B×C×H×W`` float,
  right-padded with zeros along the width (variable-width strips); or what a plug-in modality's
  reader pads (:mod:`omniformer.data.media_readers`);
* ``media_lengths``: ``B`` real samples per clip, or real pixel columns per image (a reader's length);
* ``text``: ``B×L`` ids, each row its characters' ids then ``eos_id``, right-padded with ``eos_id``;
* ``text_lengths``: ``B`` real ids per row, end-of-text included (the loss counts exactly these).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from omniformer.data.collate import pad_right
from omniformer.tokenizers.vocab import UnknownCharacterError, Vocabulary


class PairedBatch(NamedTuple):
    """One batch of the paired data modules (see the module docstring)."""

    media: Tensor
    media_lengths: Tensor
    text: Tensor
    text_lengths: Tensor


def encode_text(vocab: Vocabulary, text: str, eos_id: int) -> Tensor:
    """The ids of ``text`` followed by ``eos_id``; one error naming a character the vocabulary lacks."""
    try:
        ids = torch.from_numpy(vocab.encode(text)).long()
    except UnknownCharacterError as err:
        raise ValueError(
            f"character {err.char!r} (at {err.index} of {text!r}) is not in the vocabulary the model was "
            "trained with"
        ) from None
    return torch.cat((ids, torch.tensor([eos_id])))


def pad_images(images: Sequence[Tensor], multiple: int = 1) -> tuple[Tensor, Tensor]:
    """``(B×C×H×W, widths)``: ``C×H×w`` images right-padded with zeros to the widest, rounded up to
    ``multiple`` (the patch width, so the tokenizer's grid divides the batch)."""
    shapes = {tuple(image.shape[:2]) for image in images}
    if len(shapes) != 1:
        raise ValueError(
            f"images of one batch must share channels and height, got C×H of {sorted(shapes)}; "
            "resize them to one height first"
        )
    widths = torch.tensor([image.shape[-1] for image in images], dtype=torch.long)
    width = -(-int(widths.max()) // multiple) * multiple
    channels, height = shapes.pop()
    out = torch.zeros(len(images), channels, height, width, dtype=torch.float32)
    for row, image in enumerate(images):
        out[row, :, :, : image.shape[-1]] = image
    return out, widths


class PairCollate:
    """Turns ``(media, text)`` items into one :class:`PairedBatch`.

    Args:
        vocab: the character vocabulary.
        eos_id: the end-of-text id (one past the vocabulary's characters).
        pad: ``media -> (batch, lengths)``, the modality's padding (a
            :class:`~omniformer.data.media_readers.MediaReader`'s ``pad``).
    """

    def __init__(
        self, *, vocab: Vocabulary, eos_id: int, pad: Callable[[Sequence[Tensor]], tuple[Tensor, Tensor]]
    ) -> None:
        self.vocab, self.eos_id, self.pad = vocab, eos_id, pad

    def __call__(self, items: Sequence[tuple[Tensor, str]]) -> PairedBatch:
        media, texts = zip(*items)
        padded, lengths = self.pad(media)
        ids, text_lengths = pad_right(
            [encode_text(self.vocab, t, self.eos_id) for t in texts], dtype=torch.long
        )
        ids = ids.masked_fill(torch.arange(ids.shape[1])[None] >= text_lengths[:, None], self.eos_id)
        return PairedBatch(padded, lengths, ids, text_lengths)
