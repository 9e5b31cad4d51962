"""Video tubelet tokenizer: clips → non-overlapping space-time patches with 3-D sin-cos positions.

A clip ``B×T×C×H×W`` is cut into tubelets of ``t×h×w`` (frames × pixels × pixels) and each tubelet
is projected linearly to one token, as in ViViT's "tubelet embedding" (Arnab et al. 2021) and
VideoMAE (Tong et al. 2022). Positions are fixed and separable, as in MAE-ST (Feichtenhofer et al.
2022): the first three quarters of each token's channels hold the 2-D sin-cos code of its
(row, column), the last quarter the 1-D sin-cos code of its time step. The backbone gets
``positions=None`` (no rotary embedding: positions are in the vectors) and no mask (every tubelet
is real), unless clips of different lengths were padded in time: given each clip's real frames
(``lengths``), the tubelets that hold no real frame are masked.

This module lives outside the ``omniformer`` package on purpose: it only uses omniformer's public
types (:class:`omniformer.tokenizers.Tokens`, ``sincos_2d``) and is wired in by a ``_target_``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from omniformer.argument_checks import require_valid
from omniformer.positions import sincos_2d
from omniformer.tokenizers import Tokens


def sincos_1d(length: int, dim: int, temperature: float = 10000.0) -> Tensor:
    """Fixed 1-D sine-cosine codes, ``length×dim`` (``dim`` even): sin then cos of dim/2 frequencies."""
    if dim % 2:
        raise ValueError(f"1-D sin-cos positions need an even width, got {dim}")
    omega = temperature ** (-torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))
    angles = torch.arange(length, dtype=torch.float64)[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_3d(frames: int, rows: int, cols: int, dim: int) -> Tensor:
    """Separable space-time codes, ``(frames·rows·cols)×dim``, time-major like the tubelets.

    ``3·dim/4`` channels encode (row, column) with :func:`~omniformer.positions.sincos_2d`,
    ``dim/4`` encode the time step; ``dim`` must be divisible by 16 so both parts split evenly.
    """
    if dim % 16:
        raise ValueError(f"3-D sin-cos positions of video tubelets need a width divisible by 16, got {dim}")
    time_dim = dim // 4
    space = sincos_2d(rows, cols, dim - time_dim).float()  # (rows·cols)×(3dim/4)
    time = sincos_1d(frames, time_dim)  # frames×(dim/4)
    return torch.cat(
        [space[None].expand(frames, -1, -1), time[:, None].expand(-1, rows * cols, -1)], dim=-1
    ).reshape(frames * rows * cols, dim)


def _triple(value: int | Sequence[int], name: str) -> tuple[int, int, int]:
    triple = (int(value),) * 3 if isinstance(value, int) else tuple(int(v) for v in value)
    if len(triple) != 3 or min(triple) < 1:
        raise ValueError(f"{name} must be a positive int or [frames, height, width], got {value!r}")
    return triple  # type: ignore[return-value]


class TubeletTokenizer(nn.Module):
    """Embeds clips (``B×T×C×H×W`` floats) as ``B×N×dim`` tubelet tokens with 3-D sin-cos positions.

    Args:
        dim: width of the backbone's residual stream (divisible by 16).
        in_channels: channels per frame (1 grey, 3 RGB).
        frames: frames per clip the model is built for (positions are computed for any clip
            length divisible by the tubelet's frames; this only checks configs early).
        image_size: frame side (``int``) or ``[height, width]``.
        tubelet: ``[frames, height, width]`` of one tubelet, e.g. ``[2, 8, 8]``; must divide the clip.
        cls_token: prepend a learned CLS token (for heads with ``pool: cls``).
        dropout: dropout on the tokens.
    """

    def __init__(
        self,
        dim: int,
        in_channels: int = 1,
        frames: int = 8,
        image_size: int | Sequence[int] = 64,
        tubelet: int | Sequence[int] = (2, 8, 8),
        cls_token: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        require_valid(self.check_config, dim=dim)
        self.dim, self.in_channels = dim, in_channels
        self.tubelet = _triple(tubelet, "tubelet")
        height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.grid_for(frames, height, width)  # a clip shape the tubelet does not divide fails here
        self.proj = nn.Conv3d(in_channels, dim, kernel_size=self.tubelet, stride=self.tubelet)
        # A tubelet embedding is a linear map of the tubelet's pixels: Xavier on the flattened kernel.
        nn.init.xavier_uniform_(self.proj.weight.view(dim, -1))
        nn.init.zeros_(self.proj.bias)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02) if cls_token else None
        self.drop = nn.Dropout(dropout)
        self._positions: dict[tuple, Tensor] = {}

    @staticmethod
    def check_config(args: Mapping[str, Any]) -> list[str]:
        """The rules among the arguments; omniformer-train checks them before reading any data, naming
        each argument by the key a user sets (``model.dim=40: ...``)."""
        if isinstance(args.get("dim"), int) and args["dim"] % 16:
            return ["{dim}: 3-D sin-cos positions of video tubelets need a width divisible by 16"]
        return []

    def grid_for(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """Tubelet grid (time, rows, columns) of a clip; an error if the tubelet does not divide it."""
        t, h, w = self.tubelet
        if frames % t or height % h or width % w:
            raise ValueError(
                f"a clip of {frames}×{height}×{width} (frames×height×width) is not divisible by the tubelet "
                f"{t}×{h}×{w}; choose data.frames / data.image_size or the tokenizer's tubelet to divide it"
            )
        return frames // t, height // h, width // w

    def forward(self, clips: Tensor, lengths: Tensor | None = None) -> Tokens:
        """Tokens for ``clips`` (``B×T×C×H×W``): ``N = (T/t)·(H/h)·(W/w)`` (+1 CLS). ``lengths``: each
        clip's real frames when a batch was zero-padded in time; tubelets past them are masked."""
        if clips.ndim != 5 or clips.shape[2] != self.in_channels:
            raise ValueError(
                f"the video tokenizer expects clips of shape B×T×{self.in_channels}×H×W (in_channels="
                f"{self.in_channels}), got {tuple(clips.shape)}"
            )
        grid = self.grid_for(clips.shape[1], clips.shape[3], clips.shape[4])
        x = self.proj(clips.transpose(1, 2))  # B×dim×T'×H'×W'
        x = x.flatten(2).transpose(1, 2)  # B×N×dim, time-major
        key = (grid, x.device, x.dtype)
        if key not in self._positions:  # computed once per grid, device and dtype
            self._positions[key] = sincos_3d(*grid, self.dim).to(device=x.device, dtype=x.dtype)
        x = x + self._positions[key]
        mask = None
        if lengths is not None:  # a tubelet is real when it holds a real frame: time-major order
            steps = torch.arange(grid[0], device=x.device) * self.tubelet[0]
            real = steps[None] < lengths.to(x.device)[:, None]  # B×T'
            mask = real.repeat_interleave(grid[1] * grid[2], dim=1)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
            if mask is not None:
                mask = torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1)
        return Tokens(self.drop(x), mask=mask, positions=None)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, tubelet={self.tubelet}, cls_token={self.cls is not None}"
