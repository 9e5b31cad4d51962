"""Decoded clips kept in memory: each file is read, mixed to mono and resampled once per process.

Decoding a WAV and resampling it (band-limited sinc) costs more than the model's step on small
clips: on a 22 kHz folder a third of each training step was spent waiting for data, every epoch
redoing the same work. :class:`ClipCache` keeps the resampled waveform of each clip, keyed by its
path, modification time, size and the rate, up to ``limit_mb`` megabytes; a clip that does not fit
is decoded at every access as before. The cache is per process: each loader worker
(``persistent_workers``, which the audio loaders use) fills its own, and a pickled cache (a worker
started with ``spawn``) starts empty rather than copying the parent's clips.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import Tensor

from omniformer.data.audio_files import read_audio

#: Bytes per cached sample (float32 waveforms).
SAMPLE_BYTES = 4


class ClipCache:
    """Mono waveforms at ``sample_rate``, decoded once and kept while they fit in ``limit_mb``.

    Args:
        sample_rate: rate clips are resampled to (part of the key).
        limit_mb: the most megabytes of waveforms kept; 0 keeps none (every access decodes).
    """

    def __init__(self, sample_rate: int, limit_mb: float) -> None:
        if limit_mb < 0:
            raise ValueError(f"data.cache_mb must be >= 0 (0 turns the cache off), got {limit_mb}")
        self.sample_rate, self.limit = sample_rate, int(limit_mb * 2**20)
        self.clips: dict[tuple, Tensor] = {}
        self.bytes = 0
        self.hits = self.misses = 0

    def read(self, path: Path) -> Tensor:
        """The clip at ``path`` at the cache's rate: from memory, or decoded (and kept if it fits)."""
        if self.limit == 0:
            return read_audio(path, self.sample_rate)[0]
        stat = os.stat(path)
        key = (str(path), stat.st_mtime_ns, stat.st_size, self.sample_rate)
        clip = self.clips.get(key)
        if clip is not None:
            self.hits += 1
            return clip
        self.misses += 1
        clip = read_audio(path, self.sample_rate)[0]
        size = clip.numel() * SAMPLE_BYTES
        if self.bytes + size <= self.limit:
            self.clips[key], self.bytes = clip, self.bytes + size
        return clip

    def __getstate__(self) -> dict:
        # A worker started with spawn fills its own cache instead of receiving a copy of this one.
        return {**self.__dict__, "clips": {}, "bytes": 0, "hits": 0, "misses": 0}


def describe_cache(limit_mb: float, total_samples: int, clips: int, sample_rate: int) -> str:
    """One log line: how large the decoded clips are and whether they fit in ``data.cache_mb``."""
    size_mb = total_samples * SAMPLE_BYTES / 2**20
    if limit_mb == 0:
        return (
            f"audio decode cache off (data.cache_mb=0): {clips} clips ({size_mb:,.1f} MB decoded at "
            f"{sample_rate} Hz) are read and resampled at every access"
        )
    if size_mb <= limit_mb:
        return (
            f"audio decode cache: {clips} clips, {size_mb:,.1f} MB decoded at {sample_rate} Hz, fit in "
            f"data.cache_mb={limit_mb:g}: each is read and resampled once per loader process"
        )
    return (
        f"audio decode cache: {clips} clips take {size_mb:,.1f} MB decoded at {sample_rate} Hz, more "
        f"than data.cache_mb={limit_mb:g}; the first {limit_mb:g} MB read are kept, the rest decoded at "
        "every access (raise data.cache_mb if memory allows)"
    )
