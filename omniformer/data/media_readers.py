"""How a paired data module reads, batches and sizes one modality's media: a :class:`MediaReader`.

The paired data modules (:mod:`omniformer.data.paired`, ``data=paired``) know nothing about a modality
beyond its reader: the manifest column it names (``modality``), how one file is read (``read``), how a
batch is padded (``pad``: the padded media and each item's real length) and the sizes the model is
built from (``spec``, merged into ``data_spec``). Audio and images are the built-in readers; a plug-in
modality brings its own, named by ``_target_`` under ``data.reader`` (``examples/video`` reads ``.npy``
clips this way), and nothing inside ``omniformer/`` changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from omniformer.data.audio_files import read_audio
from omniformer.data.collate import pad_right
from omniformer.data.paired_batch import pad_images
from omniformer.prefix_files import read_image_pixels


class MediaReader:
    """One modality's media for a paired data module (subclass it, or follow the same duck type).

    ``modality`` is the manifest column that names the files and the tokenizer that reads them.
    """

    modality: str = ""

    def read(self, path: Path) -> Tensor:
        """The media in the file at ``path`` (raise ``OSError`` / ``ValueError`` if it cannot be read)."""
        raise NotImplementedError(f"{type(self).__name__} reads no files; its data module builds the media")

    def pad(self, media: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """``(batch, lengths)``: the items padded into one tensor, and each item's real length."""
        raise NotImplementedError

    def spec(self, example: Tensor) -> dict[str, Any]:
        """The sizes the model is built from, given one training item (``data_spec`` keys)."""
        return {}


class AudioReader(MediaReader):
    """Waveforms at ``sample_rate``: files are read with ``soundfile`` and resampled; a batch is
    zero-padded on the right, its lengths in samples."""

    modality = "audio"

    def __init__(self, sample_rate: int = 16000) -> None:
        if sample_rate is None or sample_rate <= 0:
            raise ValueError(f"data.sample_rate={sample_rate}: audio pairs need a positive sample rate")
        self.sample_rate = sample_rate

    def read(self, path: Path) -> Tensor:
        return read_audio(path, self.sample_rate)[0]

    def pad(self, media: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        return pad_right(media)

    def spec(self, example: Tensor) -> dict[str, Any]:
        return {"sample_rate": self.sample_rate}


class ImageReader(MediaReader):
    """``C×H×W`` float images in [0, 1], all of one height (``image_height`` resizes them, aspect
    kept); a batch is zero-padded on the right to a width divisible by ``patch_size``, its lengths in
    pixel columns."""

    modality = "image"

    def __init__(self, channels: int = 1, image_height: int | None = None, patch_size: int = 4) -> None:
        if patch_size < 1:
            raise ValueError(f"data.patch_size={patch_size} must be >= 1")
        self.channels, self.image_height, self.patch_size = channels, image_height, patch_size

    def read(self, path: Path) -> Tensor:
        return read_image_pixels(path, self.channels, self.image_height)

    def pad(self, media: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        return pad_images(media, self.patch_size)

    def spec(self, example: Tensor) -> dict[str, Any]:
        height = int(example.shape[-2])
        if height % self.patch_size:
            raise ValueError(
                f"images are {height} pixels high, not divisible by data.patch_size={self.patch_size}; "
                "pick a patch size that divides the height"
            )
        return {"in_channels": self.channels, "image_size": height, "patch_size": self.patch_size}


def builtin_reader(
    modality: str,
    *,
    sample_rate: int | None = None,
    channels: int = 1,
    image_height: int | None = None,
    patch_size: int = 4,
) -> MediaReader:
    """The built-in reader of ``modality`` (``audio`` or ``image``), from the data module's arguments."""
    if modality == "audio":
        return AudioReader(sample_rate)  # type: ignore[arg-type]
    if modality == "image":
        return ImageReader(channels, image_height, patch_size)
    raise ValueError(
        f"data.modality={modality!r}: the built-in readers are 'audio' and 'image'; for another modality "
        "give data.reader (a MediaReader _target_, see docs/EXTENDING.md)"
    )
