"""Image tokenizer: non-overlapping patches → linear embedding + 2-D positions (ViT).

Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words": an image is cut into ``p×p`` patches, each
flattened and projected to the backbone's width, so a 28×28 digit with 7×7 patches becomes 16 tokens.
Positions are encoded into the token vectors here (the backbone's 1-D rotary embedding is not used):

* ``sincos``: fixed 2-D sine-cosine positions (MAE, He et al. 2022): half the channels encode the
  patch row, half the column. Any grid works, so a larger image simply gets more positions.
* ``learned``: one learned vector per patch position. When the grid changes (fine-tuning or
  evaluating at another resolution), the table is resampled bicubically — in ``forward`` for a
  different input size, and in ``load_state_dict`` for a checkpoint trained on another grid (as in
  timm's ``resample_abs_pos_embed``).

An optional CLS token is prepended for heads that pool by ``cls``.

The patch embedding is a linear projection of each flattened patch (``stem="linear"``, ViT) or a
small convolutional stem (``stem="conv"``: 3×3 stride-2 convolutions down to the patch grid, Xiao et
al. 2021, "Early Convolutions Help Transformers See Better"), which trains much faster on small
datasets; the tokens, grid and positions are the same either way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from einops import rearrange
from torch import Tensor, nn

from omniformer.argument_checks import require_valid
from omniformer.positions import resample_grid, sincos_2d
from omniformer.tokens import Tokens

PositionKind = Literal["sincos", "learned"]
StemKind = Literal["linear", "conv"]


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """``7`` → ``(7, 7)``; ``[32, 48]`` → ``(32, 48)``; anything else is an error naming ``name``."""
    if isinstance(value, int):
        pair = (value, value)
    else:
        try:
            pair = tuple(int(v) for v in value)
        except TypeError:
            raise ValueError(f"{name} must be an int or a pair [height, width], got {value!r}") from None
    if len(pair) != 2 or min(pair) <= 0:
        raise ValueError(f"{name} must be a positive int or a pair [height, width], got {value!r}")
    return pair


class ConvStem(nn.Module):
    """Convolutional patch embedding: ``B×C×H×W`` → ``B×(H/p·W/p)×dim`` for a power-of-two patch ``p``.

    ``log2(p)`` stages of 3×3 stride-2 convolution, BatchNorm and ReLU (``channels`` wide, doubling
    per stage), then a 1×1 convolution to ``dim`` (Xiao et al. 2021). Token ``i`` covers the same
    ``p×p`` cell of the image as patch ``i`` of the linear embedding (row-major).

    Args:
        in_channels: image channels.
        patch_size: side of the patch grid's cells; a power of two (2, 4, 8, 16, ...).
        dim: token width.
        channels: width of the first stage.
    """

    def __init__(self, in_channels: int, patch_size: int, dim: int, channels: int = 32) -> None:
        super().__init__()
        if patch_size < 2 or patch_size & (patch_size - 1):
            raise ValueError(
                f"stem='conv' needs a square power-of-two patch size (2, 4, 8, 16, ...), got {patch_size}; "
                "use stem='linear' for other patch sizes"
            )
        if channels <= 0:
            raise ValueError(f"stem_channels must be positive, got {channels}")
        layers: list[nn.Module] = []
        width_in, width = in_channels, channels
        for _ in range(patch_size.bit_length() - 1):
            layers += [
                nn.Conv2d(width_in, width, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            width_in, width = width, width * 2
        layers.append(nn.Conv2d(width_in, dim, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        return rearrange(self.layers(images), "b d h w -> b (h w) d")


class ImagePatchTokenizer(nn.Module):
    """Cuts ``B×C×H×W`` images into patches and embeds them as ``B×N×dim`` tokens with 2-D positions.

    Args:
        in_channels: channels of the images (1 grayscale, 3 RGB); comes from the data module.
        image_size: training resolution, ``int`` or ``[height, width]``; sets the learned position
            grid. Inputs of other sizes work as long as both sides are divisible by the patch size.
        patch_size: patch side, ``int`` or ``[height, width]``.
        dim: width of the backbone's residual stream.
        positions: ``"sincos"`` (fixed) or ``"learned"`` (resampled when the grid changes).
        cls_token: prepend a learned CLS token (for ``pool: cls`` heads). It carries no position.
        dropout: dropout on the embedded tokens.
        stem: ``"linear"`` (a linear projection of each patch) or ``"conv"`` (:class:`ConvStem`;
            square power-of-two patches).
        stem_channels: width of the convolutional stem's first stage (``stem="conv"``).
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int | Sequence[int],
        patch_size: int | Sequence[int],
        dim: int,
        positions: PositionKind = "sincos",
        cls_token: bool = True,
        dropout: float = 0.0,
        stem: StemKind = "linear",
        stem_channels: int = 32,
    ) -> None:
        super().__init__()
        require_valid(self.check_config, dim=dim, positions=positions)
        if stem not in ("linear", "conv"):
            raise ValueError(f"stem={stem!r} is not a patch embedding; choose 'linear' or 'conv'")
        if in_channels <= 0:
            raise ValueError(f"in_channels must be positive, got {in_channels}")
        if positions not in ("sincos", "learned"):
            raise ValueError(f"positions={positions!r} is not a position kind; choose 'sincos' or 'learned'")
        self.in_channels, self.dim, self.positions = in_channels, dim, positions
        self.patch_size = _pair(patch_size, "patch_size")
        self.image_size = _pair(image_size, "image_size")
        self.grid = self.grid_for(*self.image_size)
        ph, pw = self.patch_size
        self.stem = stem
        if stem == "conv":
            if ph != pw:
                raise ValueError(f"stem='conv' needs square patches, got {ph}×{pw}")
            self.proj = ConvStem(in_channels, ph, dim, stem_channels)
        else:
            self.proj = nn.Linear(ph * pw * in_channels, dim)
            # A patch embedding is a linear layer like any other: Xavier, as in MAE's patch_embed.
            nn.init.xavier_uniform_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)
        if positions == "learned":
            self.pos_embed = nn.Parameter(torch.empty(*self.grid, dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        else:
            self.pos_embed = None
        self.cls = nn.Parameter(torch.zeros(1, 1, dim)) if cls_token else None
        if self.cls is not None:
            nn.init.normal_(self.cls, std=0.02)
        self.drop = nn.Dropout(dropout)
        self._sincos_cache: dict[tuple, Tensor] = {}

    @staticmethod
    def check_config(args: Mapping[str, Any]) -> list[str]:
        """The rules among the arguments in ``args`` (see :mod:`omniformer.argument_checks`)."""
        dim = args.get("dim")
        if args.get("positions") == "sincos" and isinstance(dim, int) and dim % 4:
            return ["{dim}: 2-D sin-cos image positions need a width divisible by 4"]
        return []

    @property
    def has_cls(self) -> bool:
        """Whether the first token is a CLS token."""
        return self.cls is not None

    def grid_for(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid (rows, columns) of an image; an error if a side is not divisible by the patch."""
        ph, pw = self.patch_size
        if height % ph or width % pw:
            raise ValueError(
                f"image size {height}×{width} is not divisible by the patch size {ph}×{pw}; "
                "choose the data's image_size (or patch_size) so that the patch divides both sides"
            )
        return height // ph, width // pw

    def position_table(self, grid: tuple[int, int], device, dtype) -> Tensor:
        """Position vectors for a patch grid, ``(rows·cols)×dim``."""
        if self.pos_embed is not None:
            return rearrange(resample_grid(self.pos_embed, grid), "h w d -> (h w) d").to(dtype)
        key = (grid, device, dtype)
        table = self._sincos_cache.get(key)
        if table is None:  # computed once per grid, device and dtype, then reused every step
            table = self._sincos_cache[key] = sincos_2d(*grid, self.dim).to(device=device, dtype=dtype)
        return table

    def forward(self, images: Tensor) -> Tokens:
        """Embed ``images`` (``B×C×H×W`` float) as ``B×N×dim`` tokens; ``N = H·W/patch² (+1 CLS)``."""
        if images.ndim != 4:
            raise ValueError(f"image tokenizer expects a B×C×H×W batch, got shape {tuple(images.shape)}")
        if images.shape[1] != self.in_channels:
            raise ValueError(
                f"image tokenizer expects {self.in_channels}-channel images (in_channels={self.in_channels}) "
                f"but the batch has {images.shape[1]} channels: grayscale vs RGB mismatch between the data "
                "and the model"
            )
        grid = self.grid_for(*images.shape[-2:])
        if self.stem == "conv":
            x = self.proj(images)
        else:
            ph, pw = self.patch_size
            x = self.proj(rearrange(images, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=ph, p2=pw))
        x = x + self.position_table(grid, x.device, x.dtype)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        return Tokens(self.drop(x), mask=None, positions=None)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        """Resample a learned position table of another grid; name a channel-count mismatch clearly."""
        ph, pw = self.patch_size
        if self.stem == "linear":  # one input feature per pixel of a patch and channel
            name, own, per_channel, what = "proj.weight", self.proj.weight, ph * pw, f"{ph}×{pw} patches"
        else:  # the first 3×3 convolution reads the image's channels
            name, own, per_channel, what = "proj.layers.0.weight", self.proj.layers[0].weight, 1, "images"
        weight = state_dict.get(prefix + name)
        if weight is not None and weight.shape != own.shape and weight.shape[0] == own.shape[0]:
            channels = weight.shape[1] / per_channel
            channels_text = f"{channels:g}-channel" if channels.is_integer() else "differently sized"
            raise ValueError(
                f"{prefix}{name}: the checkpoint's image tokenizer reads {channels_text} {what} "
                f"but this model reads {self.in_channels}-channel ones (in_channels="
                f"{self.in_channels}): grayscale vs RGB or patch-size mismatch between checkpoint and data"
            )
        key = prefix + "pos_embed"
        table = state_dict.get(key)
        if self.pos_embed is not None and table is not None and table.shape != self.pos_embed.shape:
            if table.ndim != 3 or table.shape[-1] != self.dim:
                raise ValueError(
                    f"{key}: expected a rows×cols×{self.dim} position table, got {tuple(table.shape)}"
                )
            state_dict[key] = resample_grid(table, self.grid)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, image_size={self.image_size}, patch_size={self.patch_size}, "
            f"grid={self.grid}, positions={self.positions!r}, cls_token={self.has_cls}, stem={self.stem!r}"
        )
