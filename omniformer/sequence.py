"""Mixed sequences: tokens of several modalities joined into one stream for the shared backbone.

``[<audio> frames </audio>] [text]`` or ``[<image> patches </image>] [text]``: each tokenizer makes its
own :class:`~omniformer.tokens.Tokens`; :func:`compose` concatenates them along the sequence, wraps each
marked segment in learned begin/end vectors (:class:`SegmentMarkers`, so the model knows what it reads,
as the ``<image>`` / ``</image>`` tokens of Chameleon, Team 2024, or the modality markers of 4M,
Mizrahi et al. 2023), and keeps per-token mask, positions, modality id and prefix flag. The backbone
then reads the prefix bidirectionally and the text causally (:mod:`omniformer.attention_mask`).

**Positions.** Each segment keeps its own position scheme: what a tokenizer encodes into its vectors
(2-D sin-cos of image patches, a text tokenizer's learned table) stays segment-local. The backbone's
rotary positions run on across the whole row, so rotary distances between segments are meaningful:

* a begin marker takes the next position, then the segment's tokens follow at its own 1-D positions
  shifted by that offset, then the end marker; the next segment starts after it;
* a segment without 1-D positions (it encoded its own, e.g. image patches) occupies a single rotary
  position: rotary imposes no 1-D order on a 2-D grid, and its tokens attend to each other exactly as
  they do alone (queries and keys rotated by the same angle keep their dot products);
* text continues after the prefix (it does not restart at 0), so every text token sees the prefix
  behind it at positive distances, the end marker nearest. Rotary attention among text tokens only
  depends on their distances, so a text LM's positions keep their meaning after a prefix.

Offsets count each row's *real* tokens only, so a row's positions are the same alone or padded in a
batch.

**Padding layout.** Segments are concatenated column-wise as the tokenizers padded them: a row's
padding stays inside its segment (after its real tokens, before the segment's end marker), masked.
Every row's text therefore starts in the same column, right after the prefix, and cached decoding
appends one column for all rows at once; the KV cache keeps the prefix's padding mask. Because the
prefix is read bidirectionally, where its padding sits changes nothing; because offsets skip padding,
the rotary positions are those of the row alone. The column before the text (the last end marker)
predicts the first text token: logits ``h[:, P - 1 : P + L - 1]`` score text ids ``0..L-1`` for a
prefix of ``P`` columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from omniformer.tokens import Tokens


@dataclass
class Segment:
    """One modality's tokens inside a mixed sequence.

    Attributes:
        modality: the modality's name, as :class:`SegmentMarkers` knows it.
        tokens: what that modality's tokenizer produced (``B×n×D``).
        prefix: read bidirectionally (a prefix segment) or causally (text being written). Prefix
            segments come first.
    """

    modality: str
    tokens: Tokens
    prefix: bool = True


class SegmentMarkers(nn.Module):
    """A learned begin and end vector per marked modality, and an integer id per modality name.

    Args:
        dim: width of the backbone's residual stream.
        modalities: modalities whose segments are wrapped in begin/end markers (e.g. ``["audio",
            "image"]``).
        unmarked: modalities that take part in sequences without markers (e.g. ``["text"]``, which
            ends with its own end-of-text id).

    Ids follow the order ``modalities`` then ``unmarked``.
    """

    def __init__(self, *, dim: int, modalities: Sequence[str], unmarked: Sequence[str] = ()) -> None:
        super().__init__()
        names = [*modalities, *unmarked]
        if len(set(names)) != len(names):
            raise ValueError(f"modality names must be unique, got {names}")
        self.names = names
        # Small like token embeddings (std 0.02), so a marker starts on the scale of what it wraps.
        self.begin = nn.ParameterDict({m: nn.Parameter(torch.randn(dim) * 0.02) for m in modalities})
        self.end = nn.ParameterDict({m: nn.Parameter(torch.randn(dim) * 0.02) for m in modalities})

    def modality_id(self, name: str) -> int:
        """The integer id of modality ``name``."""
        if name not in self.names:
            raise KeyError(f"no modality {name!r} in the sequence markers; known: {self.names}")
        return self.names.index(name)

    def marks(self, name: str) -> bool:
        """Whether segments of modality ``name`` are wrapped in begin/end markers."""
        return name in self.begin


def next_positions(tokens: Tokens) -> Tensor:
    """Per row (``B``), the rotary position after the row's last real token (0 for an empty row)."""
    if tokens.positions is None:
        raise ValueError("next_positions needs tokens with positions (a composed sequence has them)")
    positions = tokens.positions.long()
    if tokens.mask is not None:
        positions = positions.masked_fill(~tokens.mask.bool(), -1)
    if positions.shape[1] == 0:
        return torch.zeros(positions.shape[0], dtype=torch.long, device=positions.device)
    return positions.amax(dim=1) + 1


def place(tokens: Tokens, *, offset: Tensor, modality_id: int, prefix: bool) -> Tokens:
    """``tokens`` of one segment as part of a sequence: 1-D positions shifted by ``offset`` (``B``,
    per row; every token at ``offset`` when the tokenizer gave none), modality id and prefix flag set.
    """
    batch, n = tokens.x.shape[:2]
    device = tokens.x.device
    own = tokens.positions
    if own is None:
        own = torch.zeros(batch, n, dtype=torch.long, device=device)
    return Tokens(
        tokens.x,
        mask=tokens.mask,
        positions=own.long() + offset.to(device)[:, None],
        modality=torch.full((batch, n), modality_id, dtype=torch.long, device=device),
        prefix=torch.full((batch, n), prefix, dtype=torch.bool, device=device),
    )


def concat(parts: Sequence[Tokens]) -> Tokens:
    """Tokens joined along the sequence axis; a mask is kept if any part has one (missing = all real).

    Positions, modality ids and prefix flags are kept where every part has them.
    """
    if not parts:
        raise ValueError("concat needs at least one Tokens")
    x = torch.cat([p.x for p in parts], dim=1)
    mask = None
    if any(p.mask is not None for p in parts):
        mask = torch.cat([_or_ones(p.mask, p.x) for p in parts], dim=1)
    fields = {}
    for name in ("positions", "modality", "prefix"):
        values = [getattr(p, name) for p in parts]
        fields[name] = torch.cat(values, dim=1) if all(v is not None for v in values) else None
    return Tokens(x, mask=mask, **fields)


def _or_ones(mask: Tensor | None, x: Tensor) -> Tensor:
    return mask.bool() if mask is not None else torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)


def _marker(vector: Tensor, *, like: Tensor, offset: Tensor, modality_id: int, prefix: bool) -> Tokens:
    """One marker column for every row of a batch shaped like ``like`` (``B×n×D``)."""
    batch = like.shape[0]
    x = vector.to(like.dtype).expand(batch, 1, -1)
    one = Tokens(x, positions=torch.zeros(batch, 1, dtype=torch.long, device=like.device))
    return place(one, offset=offset, modality_id=modality_id, prefix=prefix)


def compose(segments: Sequence[Segment], *, markers: SegmentMarkers) -> Tokens:
    """One sequence from ``segments`` in order, marked modalities wrapped in their begin/end vectors.

    The result has ``x``, ``positions`` (rotary positions running on across the row, see the module
    docstring), ``modality`` and ``prefix`` set for every token, and ``mask`` when any segment is
    padded.
    """
    if not segments:
        raise ValueError("compose needs at least one segment")
    first = segments[0].tokens.x
    batch, device = first.shape[0], first.device
    offset = torch.zeros(batch, dtype=torch.long, device=device)
    parts: list[Tokens] = []
    text_seen = None
    for index, segment in enumerate(segments):
        x = segment.tokens.x
        if x.shape[0] != batch or x.shape[2] != first.shape[2]:
            raise ValueError(
                f"segment {index} ({segment.modality}) has tokens of shape {tuple(x.shape)}, but segment 0 "
                f"({segments[0].modality}) has {tuple(first.shape)}: batch size and width must match"
            )
        if segment.prefix and text_seen is not None:
            raise ValueError(
                f"segment {index} ({segment.modality}) is a prefix after the causal segment {text_seen}; "
                "prefix segments come first"
            )
        if not segment.prefix and text_seen is None:
            text_seen = f"{index} ({segment.modality})"
        modality_id, wrap = markers.modality_id(segment.modality), markers.marks(segment.modality)
        common = {"modality_id": modality_id, "prefix": segment.prefix}
        if wrap:
            parts.append(_marker(markers.begin[segment.modality], like=x, offset=offset, **common))
            offset = offset + 1
        placed = place(segment.tokens, offset=offset, **common)
        parts.append(placed)
        offset = torch.maximum(next_positions(placed), offset)
        if wrap:
            parts.append(_marker(markers.end[segment.modality], like=x, offset=offset, **common))
            offset = offset + 1
    return concat(parts)
