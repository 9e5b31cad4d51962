"""Position encodings shared by the backbone and the tokenizers.

* :func:`sincos_2d`: fixed 2-D sine-cosine vectors for a grid of patches (Vaswani et al. 2017, in 2-D
  as in MAE, He et al. 2022), added to image and audio-patch tokens.
* :func:`resample_grid`: a learned 2-D position table resized to another grid (timm's
  ``resample_abs_pos_embed``), so models survive a change of input size.
* :class:`Rotary` and :func:`apply_rotary`: rotary embeddings of 1-D token positions (RoPE, Su et al.
  2021), applied to queries and keys inside attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


def sincos_2d(grid_h: int, grid_w: int, dim: int, temperature: float = 10000.0) -> Tensor:
    """Fixed 2-D sine-cosine position vectors, ``(grid_h·grid_w)×dim``, row-major like the patches.

    The first half of the channels encodes the row, the second half the column; each half holds
    ``sin`` and ``cos`` of ``dim/4`` geometrically spaced frequencies (Vaswani et al. 2017, in 2-D as
    in MAE).
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos positions need a width divisible by 4, got model.dim={dim}")
    omega = temperature ** (-torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    rows, cols = torch.meshgrid(
        torch.arange(grid_h, dtype=torch.float64), torch.arange(grid_w, dtype=torch.float64), indexing="ij"
    )
    parts = []
    for coord in (rows.flatten(), cols.flatten()):
        angles = coord[:, None] * omega[None, :]
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=1).float()


def resample_grid(table: Tensor, grid: tuple[int, int]) -> Tensor:
    """Bicubically resample a ``h×w×dim`` position table to ``grid`` (antialiased when shrinking)."""
    if tuple(table.shape[:2]) == tuple(grid):
        return table
    shrink = grid[0] < table.shape[0] or grid[1] < table.shape[1]
    image = rearrange(table, "h w d -> 1 d h w").float()
    resized = F.interpolate(image, size=grid, mode="bicubic", align_corners=False, antialias=shrink)
    return rearrange(resized, "1 d h w -> h w d").to(table.dtype)


class Rotary(nn.Module):
    """Rotary position embedding (RoPE, Su et al. 2021) for 1-D token positions."""

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary positions need an even head dimension, got {head_dim}")
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(cos, sin)`` of shape ``B×1×N×head_dim/2`` for integer ``positions`` (``B×N``)."""
        angles = positions.to(self.inv_freq.dtype)[..., None] * self.inv_freq
        return angles.cos()[:, None], angles.sin()[:, None]


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the two halves of each head's features by the position angles (GPT-NeoX layout)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    rotated = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return rotated.type_as(x)
