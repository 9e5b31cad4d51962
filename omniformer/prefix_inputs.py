"""A batch's media as the prefix of a mixed sequence: tokenized, padding masked, wrapped in markers.

Audio tokenizers turn sample lengths into a padding mask themselves. The image tokenizer sees one
padded ``B×C×H×W`` batch; for variable-width images (digit strips) the patches right of an image's own
width are masked here, from the widths in pixels (a patch that holds any real column is real).

A prefix and its text must fit ``model.max_seq_len`` together: training reads ``<m> prefix </m>`` and
every text id but the last, as generating the text after the prefix does. Both fail with one error
naming the prefix's tokens, the text's ids and the limit (:func:`check_sequence_room`): at setup, from
the first training pair and the data's longest text (:func:`check_data_fits`), and on every batch
before the backbone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from omniformer.model import OmniModel
from omniformer.sequence import Segment, compose
from omniformer.tokens import Tokens


def media_tokens(net: OmniModel, modality: str, media: Tensor, lengths: Tensor | None = None) -> Tokens:
    """``media`` through ``net``'s ``modality`` tokenizer, padding masked by ``lengths`` (samples of a
    clip, or pixel columns of an image)."""
    if modality not in net.tokenizers:
        raise KeyError(
            f"the model has no {modality} tokenizer (it has {sorted(net.tokenizers)}); it cannot read "
            f"{modality} (for a prefix LM, train with prefix={modality})"
        )
    tokenizer = net.tokenizers[modality]
    if modality != "image":
        return tokenizer(media) if lengths is None else tokenizer(media, lengths)
    tokens = tokenizer(media)
    if lengths is None:
        return tokens
    if getattr(tokenizer, "has_cls", False):
        raise ValueError("an image prefix with variable widths needs cls_token: false in its tokenizer")
    rows, cols = tokenizer.grid_for(*media.shape[-2:])
    patch_width = media.shape[-1] // cols
    real_cols = (lengths.to(media.device) + patch_width - 1) // patch_width  # B
    col = torch.arange(cols, device=media.device).repeat(rows)  # raster order: (h w)
    return Tokens(tokens.x, mask=col[None] < real_cols[:, None], positions=tokens.positions)


def media_prefix(net: OmniModel, modality: str, media: Tensor, lengths: Tensor | None = None) -> Tokens:
    """The composed prefix ``<modality> tokens </modality>`` of a batch, with ``net.markers``."""
    if net.markers is None:
        raise ValueError("the model has no sequence markers (OmniModel markers=...): it cannot read a prefix")
    return compose([Segment(modality, media_tokens(net, modality, media, lengths))], markers=net.markers)


def prefix_and_text(
    net: OmniModel, modality: str, media: Tensor, lengths: Tensor | None, text_ids: Tensor, text_modality: str
) -> Tokens:
    """The teacher-forced sequence ``<modality> tokens </modality> text_ids`` (text read causally);
    ``text_ids`` are the text but its last id, so the text is one id longer."""
    if net.markers is None:
        raise ValueError("the model has no sequence markers (OmniModel markers=...): it cannot read a prefix")
    prefix = media_tokens(net, modality, media, lengths)
    check_sequence_room(modality, prefix.x.shape[1] + 2, text_ids.shape[1] + 1, net.backbone.max_seq_len)
    segments = [
        Segment(modality, prefix),
        Segment(text_modality, net.tokenizers[text_modality](text_ids), prefix=False),
    ]
    return compose(segments, markers=net.markers)


def check_sequence_room(
    modality: str, prefix_len: int, text_len: int, max_seq_len: int, where: str = "in a batch, "
) -> None:
    """One error when a prefix of ``prefix_len`` tokens (its two markers included) and a text of
    ``text_len`` ids (end of text included) do not fit ``max_seq_len``: teacher forcing reads the
    prefix and ``text_len - 1`` ids, as generating the text after the prefix does."""
    needed = prefix_len + text_len - 1
    if needed > max_seq_len:
        raise ValueError(
            f"{where}the {modality} prefix takes {prefix_len} tokens (its 2 markers included) and the "
            f"text {text_len} ids (end of text included): {needed} positions, more than "
            f"model.max_seq_len={max_seq_len}; raise model.max_seq_len to {needed} or more, or use "
            "shorter media or texts"
        )


@torch.no_grad()
def check_data_fits(net: OmniModel, modality: str, datamodule: Any) -> None:
    """Before any step: the first training pair's prefix and the data's longest text must fit
    ``model.max_seq_len``. Needs a paired data module after ``setup`` (``splits``, ``max_text_len``,
    ``collate()``); with anything else the per-batch check is the only one."""
    splits = getattr(datamodule, "splits", None)
    max_text_len = getattr(datamodule, "max_text_len", 0)
    if not splits or "train" not in splits or not max_text_len or not hasattr(datamodule, "collate"):
        return
    if modality not in net.tokenizers:
        return  # the task refuses such a model with its own error
    media, lengths, _, _ = datamodule.collate()([splits["train"][0]])
    tokenizer = net.tokenizers[modality]
    was_training = tokenizer.training
    tokenizer.eval()  # no dropout or augmentation: nothing random is drawn
    try:
        prefix = media_tokens(net, modality, media, lengths)
    finally:
        tokenizer.train(was_training)
    check_sequence_room(
        modality,
        prefix.x.shape[1] + 2,
        max_text_len,
        net.backbone.max_seq_len,
        where="at setup (the first training pair, the longest text), ",
    )
