"""Image folders that are not colour photos: grayscale detection and named augmentation presets.

A folder of digits, scanned text or X-rays is grayscale, and its labels do not survive a mirror image
or a crop that keeps a third of it (a flipped 2 or a cropped-out stroke is another class). So an image
folder first looks at a fixed sample of its training files (:func:`detect_channels`): when every one
is grayscale (PIL mode ``1``/``L``/``I``..., or colour with R = G = B) the folder is read as 1
channel, otherwise as RGB. The training augmentation is then one of three named presets
(:func:`augment_steps`), chosen from that finding unless ``data.augment`` names one:

* ``photo`` (colour sources): ``RandomResizedCrop`` to 35-100% of the image and a horizontal flip,
  the usual ImageNet-style augmentation for natural photographs;
* ``light`` (grayscale sources): small affine jitter (±8°, ±6% shifts, ±5% scale), no flip: the
  shape keeps its meaning, as with the ±2 px shifts MNIST trains with here;
* ``none``: no augmentation.

The presets are built here from their name, so a stored config holds only the name and predict /
export never build them (evaluation never augments).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence

from PIL import Image
from torchvision.transforms import v2

from omniformer.data.image_files import channels_equal, load_image

PRESETS = ("photo", "light", "none")
#: Training images looked at to tell a grayscale folder from a colour one.
GRAY_SAMPLE = 64
#: PIL modes with one grey channel (``LA``/``PA`` alpha is dropped when read).
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")


def augment_steps(preset: str, image_size: Sequence[int]) -> list[Callable]:
    """The v2 transforms of a named preset (``photo``, ``light`` or ``none``), before the resize."""
    if preset == "photo":
        return [
            v2.RandomResizedCrop(list(image_size), scale=(0.35, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
        ]
    if preset == "light":
        return [v2.RandomAffine(degrees=8, translate=(0.06, 0.06), scale=(0.95, 1.05))]
    if preset == "none":
        return []
    raise ValueError(f"data.augment={preset!r}; choose auto, {', '.join(PRESETS)}")


def is_grayscale(path: str) -> bool:
    """Whether the image at ``path`` is grey (:func:`grey_image`)."""
    return grey_image(load_image(path))


def grey_image(image: Image.Image) -> bool:
    """Whether a decoded ``image`` is grey: a one-channel mode, or colour with equal channels."""
    if image.mode in GRAY_MODES:
        return True
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGB")
    return channels_equal(image)


def detect_channels(
    paths: Sequence[str], seed: int, known: Mapping[str, bool] | None = None
) -> tuple[int, int, int]:
    """``(channels, grey, sampled)``: 1 when all of up to :data:`GRAY_SAMPLE` files (a fixed sample
    drawn with ``seed``) are grayscale, else 3; how many of how many sampled files were grey.
    ``known``: whether files already decoded are grey (``data.skip_corrupt`` decodes every one), so
    they are not opened again.

    An unreadable file is left out of the count: its error, naming it, comes when it is first read
    (or ``data.skip_corrupt`` drops it), as without detection.
    """
    sample = list(paths)
    if len(sample) > GRAY_SAMPLE:
        sample = random.Random(seed).sample(sample, GRAY_SAMPLE)
    known = known or {}
    found = []
    for path in sample:
        try:
            found.append(known[path] if path in known else is_grayscale(path))
        except ValueError:
            continue
    grey = sum(found)
    return (1 if found and grey == len(found) else 3), grey, len(found)


def preset_for(augment: str, channels: int) -> str:
    """The preset ``augment`` names; ``auto`` is ``photo`` for colour sources, ``light`` for grey."""
    if augment == "auto":
        return "photo" if channels == 3 else "light"
    if augment not in PRESETS:
        raise ValueError(f"data.augment={augment!r}; choose auto, {', '.join(PRESETS)}")
    return augment
