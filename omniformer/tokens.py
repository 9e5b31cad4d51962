"""The one type every modality tokenizer produces and the backbone consumes.

It lives outside ``omniformer.tokenizers`` so that the backbone (and anything else that only passes
tokens around) imports without the tokenizers' audio and image libraries.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class Tokens:
    """A batch of token vectors with per-token mask and positions.

    Attributes:
        x: ``B×N×D`` float tensor of token vectors.
        mask: optional ``B×N`` bool tensor, True where a token is real (False = padding, never
            attended to).
        positions: optional ``B×N`` integer tensor of 1-D positions, used by the backbone's rotary
            embedding. ``None`` when the tokenizer already encoded positions into ``x`` (e.g. 2-D
            sin-cos positions of image patches).
        modality: optional ``B×N`` integer tensor naming each token's modality (an index into the
            names of :class:`omniformer.sequence.SegmentMarkers`); set on mixed sequences, so heads
            can read the positions they own. The backbone ignores it.
        prefix: optional ``B×N`` bool tensor, True where a token belongs to the prefix that the
            backbone reads bidirectionally when called with ``causal=True`` (prefix-LM); ``None`` =
            no prefix.

    Masks and positions are per token, not per batch, so tokens of several modalities can be
    concatenated into one sequence (:func:`omniformer.sequence.compose`).
    """

    x: Tensor
    mask: Tensor | None = None
    positions: Tensor | None = None
    modality: Tensor | None = None
    prefix: Tensor | None = None

    def __post_init__(self) -> None:
        batch, length = self.x.shape[:2]
        for name in ("mask", "positions", "modality", "prefix"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != (batch, length):
                raise ValueError(
                    f"Tokens.{name} must have shape {(batch, length)} to match x, got {tuple(value.shape)}"
                )
