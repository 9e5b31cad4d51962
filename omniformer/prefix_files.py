"""Reading a prefix LM's input files exactly as its paired data module read the training media.

A paired data module (:class:`omniformer.data.paired.PairedDataModule`) writes how it reads media
into the checkpoint as ``media.json`` (a :class:`MediaReading`): audio is mixed to mono and
resampled to the training rate (the log-mel features are computed inside the model); images are
converted to the training channels, resized to the training height (aspect kept), scaled to
``[0, 1]`` and normalised if training normalised. ``omniformer-generate audio=...`` /
``image=...`` and ``omniformer-predict`` read files through it, so they see what training saw,
without the dataset. Batches are padded the way training batches were
(:mod:`omniformer.data.paired_batch`): with per-item lengths, so padding is masked.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

#: The checkpoint / model folder artifact holding a :class:`MediaReading`.
MEDIA_FILE = "media.json"
MODALITIES = ("audio", "image")


@dataclass(frozen=True)
class MediaReading:
    """How media files become model inputs (see the module docstring).

    Attributes:
        modality: ``audio`` or ``image``.
        sample_rate: audio: every clip is resampled to it.
        channels: image: 1 (grayscale) or 3 (RGB).
        height: image: every image is resized to this height, keeping its aspect ratio.
        patch_size: image: batches are padded to a width divisible by it (the tokenizer's patch).
        mean: image: subtracted from the ``[0, 1]`` pixels when training normalised them.
        std: image: the pixels are then divided by it.
    """

    modality: str
    sample_rate: int | None = None
    channels: int = 1
    height: int | None = None
    patch_size: int = 1
    mean: float | None = None
    std: float | None = None

    def to_json(self) -> str:
        """The ``media.json`` text."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str | Path = MEDIA_FILE) -> MediaReading:
        """A reading from ``media.json`` text; one error naming ``source`` when it is not one."""
        try:
            fields = json.loads(text)
            reading = cls(**fields)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{source}: {MEDIA_FILE} is not a media reading ({err})") from None
        if reading.modality not in MODALITIES:
            raise ValueError(f"{source}: {MEDIA_FILE} modality={reading.modality!r}, not audio or image")
        return reading

    @classmethod
    def from_tokenizer(cls, modality: str, tokenizer: Mapping[str, Any]) -> MediaReading:
        """For a checkpoint written before ``media.json`` existed: the rate, channels, height and patch
        its tokenizer was built for (no pixel normalisation)."""
        if modality == "audio":
            return cls("audio", sample_rate=int(tokenizer["sample_rate"]))
        size = tokenizer.get("image_size")
        height = size if isinstance(size, int) or size is None else size[0]
        patch = tokenizer.get("patch_size", 1)
        return cls(
            "image",
            channels=int(tokenizer.get("in_channels", 1)),
            height=height,
            patch_size=patch if isinstance(patch, int) else patch[-1],
        )


def read_image_pixels(path: str | Path, channels: int, height: int | None) -> Tensor:
    """``path`` as a ``C×H×W`` float image in ``[0, 1]``, resized to ``height`` (aspect kept) when it
    differs. Colour files given to a grayscale model are converted (as the paired data modules do)."""
    from torchvision.transforms.v2 import functional as TF

    from omniformer.data.image_files import read_image

    image = TF.to_dtype(TF.to_image(read_image(path, channels, strict=False)), torch.float32, scale=True)
    if height is not None and image.shape[-2] != height:
        width = max(1, round(image.shape[-1] * height / image.shape[-2]))
        image = TF.resize(image, [height, width], antialias=True)
    return image.as_subclass(Tensor)


def read_media_file(path: str | Path, reading: MediaReading) -> Tensor:
    """One input file as the model's data module read training media: a 1-D waveform at
    ``reading.sample_rate``, or a ``C×H×W`` float image.

    Raises:
        FileNotFoundError: no file at ``path`` (naming it).
        ValueError: a file that cannot be read as ``reading.modality`` (naming it).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{reading.modality} file {path} does not exist")
    try:
        if reading.modality == "audio":
            from omniformer.data.audio_files import read_audio

            return read_audio(path, reading.sample_rate)[0]
        pixels = read_image_pixels(path, reading.channels, reading.height)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {reading.modality} file {path}: {err}") from None
    if reading.mean is not None and reading.std is not None:
        pixels = (pixels - reading.mean) / reading.std
    return pixels


def media_batch(items: Sequence[Tensor], reading: MediaReading) -> tuple[Tensor, Tensor]:
    """``(media, lengths)`` of read items, right-padded with zeros as training batches were: audio
    ``B×T`` with samples per clip, images ``B×C×H×W`` (width a multiple of the patch) with widths."""
    from omniformer.data.collate import pad_right
    from omniformer.data.paired_batch import pad_images

    if reading.modality == "audio":
        bad = [i for i, item in enumerate(items) if item.ndim != 1]
        if bad:
            raise ValueError(
                f"audio input {bad[0]} has shape {tuple(items[bad[0]].shape)}; give 1-D waveforms"
            )
        return pad_right(list(items))
    bad = [i for i, item in enumerate(items) if item.ndim != 3]
    if bad:
        raise ValueError(f"image input {bad[0]} has shape {tuple(items[bad[0]].shape)}; give C×H×W images")
    return pad_images(list(items), reading.patch_size)
