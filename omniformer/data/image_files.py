"""Reading image files: decode (errors name the file), convert to 1 or 3 channels, keep 16-bit depth.

Files deeper than 8 bits (16-bit PNG, TIFF and PGM) are scaled by their own bit depth. PIL converts a
16-bit grey image (mode ``I;16``) to 8-bit ``L`` by clipping every value above 255, so grey levels
1000 and 60000 both become white, and it reads 16-bit colour PNGs as 8-bit RGB. Such files are
decoded here into float32 ``C×H×W`` pixels in [0, 1] (value / 65535): 16-bit grey files (PNG, TIFF,
PGM) from PIL's own array, 16-bit colour PNGs (which PIL cannot read) through
``torchvision.io.decode_png``. They are then converted to the model's channel count by the rules
8-bit images follow (:func:`convert_channels`). 8-bit files never come here: they keep PIL's path,
pixel for pixel as before.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageChops
from torchvision import tv_tensors

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
#: ITU-R 601-2 luma weights, the ones PIL's RGB → L conversion uses.
LUMA = (0.299, 0.587, 0.114)


def png_bit_depth(path: str | Path) -> int | None:
    """Bits per sample a PNG's IHDR declares (1, 2, 4, 8 or 16); ``None`` if ``path`` is not a PNG."""
    with open(path, "rb") as handle:
        head = handle.read(26)
    if head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    return head[24]


def decode_png16(path: str | Path) -> torch.Tensor:
    """A 16-bit PNG's ``C×H×W`` integer pixels (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA) via torchvision."""
    try:
        from torchvision.io import ImageReadMode, decode_png, read_file
    except ImportError:
        raise ValueError(
            f"{path} is a 16-bit colour PNG, which PIL reads only as 8 bits and this torchvision can no "
            "longer decode; save it as 16-bit grey or 8-bit colour"
        ) from None
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its decoders for torchcodec, which is not a dependency.
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_png(read_file(str(path)), ImageReadMode.UNCHANGED)


def deep_pixels(image: Image.Image, path: str | Path) -> torch.Tensor | None:
    """Float32 ``C×H×W`` pixels in [0, 1] of a 16-bit image (alpha dropped); ``None`` for 8-bit ones.

    Pixels with 32-bit integer or float values (mode ``I`` or ``F`` other than 16-bit PNG / PGM)
    have no bit depth to scale by: an error naming ``path``, instead of PIL's clipping to 255.
    """
    # PIL reads a 16-bit grey PNG as I;16 (I in older Pillow) and a PGM whose maxval exceeds 255 as I,
    # rescaled to 0..65535.
    if image.mode in SIXTEEN_BIT_MODES or (image.mode == "I" and image.format in ("PNG", "PPM")):
        return torch.from_numpy(np.asarray(image, dtype=np.float32) / 65535)[None]
    if image.format == "PNG" and png_bit_depth(path) == 16:  # colour: PIL gave 8 bits
        raw = decode_png16(path)  # uint16 (int32 in older torchvision)
        raw = raw[:1] if raw.shape[0] == 2 else raw[:3]  # alpha dropped, as for 8-bit images
        return raw.to(torch.float32) / 65535
    if image.mode in ("I", "F"):
        kind = "integer" if image.mode == "I" else "float"
        raise ValueError(
            f"{path} has 32-bit {kind} pixels (PIL mode {image.mode}), whose value range is unknown; "
            "save it as an 8- or 16-bit PNG with the range you mean"
        )
    return None


def match_channels(pixels: torch.Tensor, channels: int, path: str | Path, strict: bool) -> tv_tensors.Image:
    """``pixels`` (1 or 3 channels) with ``channels`` channels, by :func:`convert_channels`'s rules.

    Grey → RGB repeats the channel. RGB → grey keeps one channel when all three are equal, mixes them
    with PIL's luma weights when ``strict`` is False, and is otherwise an error naming ``path``.
    """
    if channels not in (1, 3):
        raise ValueError(f"data.channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if pixels.shape[0] == channels:
        return tv_tensors.Image(pixels)
    if channels == 3:
        return tv_tensors.Image(pixels.expand(3, -1, -1).clone())
    if torch.equal(pixels[0], pixels[1]) and torch.equal(pixels[0], pixels[2]):
        return tv_tensors.Image(pixels[:1].clone())
    if strict:
        raise ValueError(
            f"{path} is a colour (RGB) image but the model reads 1-channel grayscale images; "
            "convert the file to grayscale first (the model never saw colour)"
        )
    weights = torch.tensor(LUMA, dtype=pixels.dtype).view(3, 1, 1)
    return tv_tensors.Image((pixels * weights).sum(dim=0, keepdim=True))


def load_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image file; one error naming the file if it is corrupt or truncated."""
    try:
        with open(path, "rb") as handle:
            image = Image.open(handle)
            image.load()  # decode now, so a truncated file fails here and not deep in a transform
    except FileNotFoundError:
        raise FileNotFoundError(f"image file {path} does not exist") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read image {path}: corrupt or truncated file ({err})") from None
    return image


def channels_equal(image: Image.Image) -> bool:
    """Whether the R, G and B channels of an ``RGB``/``RGBA`` ``image`` are equal (a grey picture)."""
    r, g, b = image.split()[:3]
    return ImageChops.difference(r, g).getbbox() is None and ImageChops.difference(r, b).getbbox() is None


def convert_channels(image: Image.Image, channels: int, path: str | Path, strict: bool) -> Image.Image:
    """``image`` as ``L`` (``channels=1``) or ``RGB`` (``channels=3``).

    Grey → RGB is always safe. Colour → grey happens only when ``strict`` is False (a dataset whose
    config asked for ``channels: 1``) or when the colour channels are all equal; otherwise it is an
    error naming ``path`` (a user's colour photo given to a grayscale model).
    """
    if image.mode in ("P", "PA", "RGBA", "LA", "CMYK", "YCbCr", "HSV", "LAB"):
        image = image.convert("RGB") if image.mode not in ("LA",) else image.convert("L")
    if channels == 3:
        return image.convert("RGB")
    if channels != 1:
        raise ValueError(f"data.channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if image.mode == "RGB" and strict and not channels_equal(image):
        raise ValueError(
            f"{path} is a colour (RGB) image but the model reads 1-channel grayscale images; "
            "convert the file to grayscale first (the model never saw colour)"
        )
    return image.convert("L")


def read_image(path: str | Path, channels: int, strict: bool) -> Image.Image | tv_tensors.Image:
    """Decode ``path`` and convert it to ``channels``: 8-bit files as PIL images (:func:`convert_channels`),
    16-bit ones as float pixels in [0, 1] scaled by their bit depth (:func:`deep_pixels`)."""
    image = load_image(path)
    pixels = deep_pixels(image, path)
    if pixels is not None:
        return match_channels(pixels, channels, path, strict)
    return convert_channels(image, channels, path, strict)
