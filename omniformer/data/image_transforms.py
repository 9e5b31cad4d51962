"""The fixed steps that end every image pipeline: resize to the model's size, scale and normalise."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision.transforms import v2


class ResizeIfNeeded:
    """``v2.Resize(size)`` for images of another size; images already ``size`` pass untouched."""

    def __init__(self, size: Sequence[int]) -> None:
        self.size = [int(s) for s in size]
        self.resize = v2.Resize(self.size, antialias=True)

    def __call__(self, image: Any) -> Any:
        if list(v2.functional.get_size(image)) == self.size:
            return image
        return self.resize(image)

    def __repr__(self) -> str:
        return f"ResizeIfNeeded(size={self.size})"


class ScaleNormalize:
    """Pixels → float32 ``(x / max - mean) / std`` per channel, as ``v2.ToDtype(float32, scale=True)``
    followed by ``v2.Normalize(mean, std)``; uint8 images take one fused multiply-add."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]
        mean_t, std_t = torch.tensor(self.mean).view(-1, 1, 1), torch.tensor(self.std).view(-1, 1, 1)
        self.uint8_scale, self.shift = 1.0 / (255.0 * std_t), -mean_t / std_t
        self.generic = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)])

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if isinstance(image, torch.Tensor) and image.dtype == torch.uint8:
            pixels = image.as_subclass(torch.Tensor).to(torch.float32)
            return torch.addcmul(self.shift, pixels, self.uint8_scale)
        return self.generic(image).as_subclass(torch.Tensor)

    def __repr__(self) -> str:
        return f"ScaleNormalize(mean={self.mean}, std={self.std})"
