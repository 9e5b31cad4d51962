"""Reading audio files with soundfile: mono, resampled, and one error naming a missing or broken file.

torchaudio's own loader needs torchcodec, which is not a dependency; ``soundfile`` (libsndfile)
reads WAV, FLAC and OGG. Clips are mixed to mono and resampled with
``torchaudio.functional.resample`` to the model's rate.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio
from torch import Tensor

from omniformer.data.wav import declared_frames

SUPPORTED_SUFFIXES = (".wav", ".flac", ".ogg")
# Audio formats people have that this loader cannot read: a folder holding them raises instead of
# silently training on fewer clips.
UNSUPPORTED_AUDIO = (".mp3", ".m4a", ".aac", ".wma", ".opus", ".amr", ".mp4", ".webm")


def check_audio_path(path: str | Path) -> Path:
    """Return ``path`` if it names an existing file of a supported format; raise naming it otherwise."""
    path = Path(path).expanduser()
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported audio format {path.suffix or '(no extension)'!r}; "
            f"supported: {', '.join(SUPPORTED_SUFFIXES)} (convert it, e.g. with ffmpeg)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"audio file {path} does not exist")
    return path


def read_audio(path: str | Path, sample_rate: int | None = None) -> tuple[Tensor, int]:
    """Read an audio file as a mono float32 waveform (1-D), resampled to ``sample_rate`` if given.

    Returns the waveform and its rate. Raises one error naming the file if it is missing, empty (0
    bytes), unreadable or corrupt, shorter than its WAV header declares, has no samples, or holds
    non-finite values.
    """
    path = check_audio_path(path)
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes); delete it or replace it with a real recording")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise ValueError(f"{path} is not a readable audio file (corrupt or truncated?): {err}") from None
    check_complete(path, data.shape[0])
    if data.shape[0] == 0:
        raise ValueError(f"{path} has zero length: its header is valid but it holds no samples")
    if not np.isfinite(data).all():
        raise ValueError(f"{path} holds NaN or infinite samples")
    waveform = to_mono(torch.from_numpy(data))
    if sample_rate is not None and rate != sample_rate:
        waveform = resample(waveform, rate, sample_rate)
        rate = sample_rate
    return waveform, rate


def check_complete(path: Path, frames: int) -> None:
    """Raise, naming ``path``, if its WAV header declares more frames than the ``frames`` it holds."""
    declared = declared_frames(path)
    if declared is not None and frames < declared:
        raise ValueError(
            f"{path} is truncated: its header declares {declared} frames but the file holds {frames}; "
            "copy it again or delete it (data.skip_corrupt=true skips unreadable files)"
        )


def to_mono(data: Tensor) -> Tensor:
    """Average the channels of a ``samples×channels`` array (soundfile's layout) into one 1-D waveform."""
    if data.ndim == 1:
        return data
    if data.ndim != 2:
        raise ValueError(f"expected samples×channels audio, got shape {tuple(data.shape)}")
    return data.mean(dim=1) if data.shape[1] > 1 else data[:, 0]


def resample(waveform: Tensor, orig_rate: int, new_rate: int) -> Tensor:
    """Resample with ``torchaudio.functional.resample`` (band-limited sinc interpolation)."""
    if orig_rate <= 0 or new_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_rate} -> {new_rate}")
    if orig_rate == new_rate:
        return waveform
    return torchaudio.functional.resample(waveform, int(orig_rate), int(new_rate))


def audio_frames(path: Path, sample_rate: int) -> int:
    """Samples of a file at ``sample_rate``, read from its header only (for length bucketing)."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        if path.is_file() and path.stat().st_size == 0:
            raise ValueError(
                f"{path} is empty (0 bytes); delete it or replace it with a real recording"
            ) from None
        raise ValueError(f"{path} is not a readable audio file (corrupt or truncated?): {err}") from None
    check_complete(path, info.frames)
    return math.ceil(info.frames * sample_rate / info.samplerate)
