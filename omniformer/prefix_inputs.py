"""A batch's media as the prefix of a mixed sequence: tokenized, padding masked, wrapped in markers.

Audio tokenizers turn sample lengths into a padding mask themselves. The image tokenizer sees one
padded ``B×C×H×W`` batch; for variable-width images (digit strips) the patches right of an image's own
width are masked here, from the widths in pixels (a patch that holds any real column is real).
"""

from __future__ import annotations

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
    """The teacher-forced sequence ``<modality> tokens </modality> text_ids`` (text read causally)."""
    if net.markers is None:
        raise ValueError("the model has no sequence markers (OmniModel markers=...): it cannot read a prefix")
    segments = [
        Segment(modality, media_tokens(net, modality, media, lengths)),
        Segment(text_modality, net.tokenizers[text_modality](text_ids), prefix=False),
    ]
    return compose(segments, markers=net.markers)
