"""Audio decode cache (issue #17): each clip is read and resampled once per process, within a size
cap, keyed by path, modification time, size and rate; the size is logged at setup."""

from __future__ import annotations

import logging
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import omniformer.data.audio_cache as audio_cache
from omniformer.data import AudioFolderDataModule
from omniformer.data.audio_cache import ClipCache
from omniformer.data.audio_files import read_audio
from tests.helpers.paths import FIXTURES


def tones(root: Path, per_class: int = 3, rate: int = 22050) -> Path:
    for name, freq in (("low", 200), ("high", 2000)):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            t = np.arange(int(rate * (0.2 + 0.05 * i))) / rate
            sf.write(root / name / f"{i}.wav", (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate)
    return root


def counting_reads(monkeypatch) -> list[Path]:
    reads: list[Path] = []

    def read(path, sample_rate=None):
        reads.append(Path(path))
        return read_audio(path, sample_rate)

    monkeypatch.setattr(audio_cache, "read_audio", read)
    return reads


def test_a_clip_is_decoded_once_and_refreshed_when_the_file_changes(tmp_path, monkeypatch):
    reads = counting_reads(monkeypatch)
    clip = tones(tmp_path / "t", per_class=1) / "low" / "0.wav"
    cache = ClipCache(16000, limit_mb=1)
    first = cache.read(clip)
    assert torch.equal(first, read_audio(clip, 16000)[0]) and torch.equal(cache.read(clip), first)
    assert reads == [clip] and (cache.hits, cache.misses) == (1, 1) and cache.bytes == first.numel() * 4
    sf.write(clip, np.zeros(800, np.float32), 8000)  # a new recording under the same name
    os.utime(clip, ns=(os.stat(clip).st_atime_ns, os.stat(clip).st_mtime_ns + 10**9))
    assert len(cache.read(clip)) == 1600 and reads == [clip, clip]


def test_the_cap_and_zero_turn_caching_off(tmp_path, monkeypatch):
    reads = counting_reads(monkeypatch)
    clip = tones(tmp_path / "t", per_class=1) / "high" / "0.wav"
    for limit in (0, 0.001):  # off, and too small for one clip (4.4k samples = 17 KB)
        cache = ClipCache(22050, limit)
        cache.read(clip)
        cache.read(clip)
        assert cache.clips == {} and cache.bytes == 0
    assert len(reads) == 4
    with pytest.raises(ValueError, match=r"data\.cache_mb must be >= 0"):
        ClipCache(16000, -1)
    with pytest.raises(ValueError, match=r"data\.cache_mb must be >= 0"):
        AudioFolderDataModule(str(tmp_path), cache_mb=-5)


def test_a_pickled_cache_starts_empty(tmp_path):
    clip = tones(tmp_path / "t", per_class=1) / "low" / "0.wav"
    cache = ClipCache(16000, 1)
    cache.read(clip)
    copy = pickle.loads(pickle.dumps(cache))
    assert copy.clips == {} and copy.bytes == 0 and copy.limit == cache.limit and len(cache.clips) == 1


def test_an_audio_folder_reads_each_clip_once_across_epochs_and_logs_the_size(tmp_path, monkeypatch, caplog):
    reads = counting_reads(monkeypatch)
    root = tones(tmp_path / "tones")
    dm = AudioFolderDataModule(str(root), val_fraction=0.2, test_fraction=0.2, batch_size=2)
    with caplog.at_level(logging.INFO, logger="omniformer"):
        dm.setup()
    total = sum(len(read_audio(p, 16000)[0]) for items in dm.splits.values() for p, _ in items)
    assert (
        f"audio decode cache: 6 clips, {total * 4 / 2**20:,.1f} MB decoded at 16000 Hz, fit in" in caplog.text
    )
    first = [batch[0].clone() for _ in range(2) for batch in dm.train_dataloader()]
    assert len(reads) == len(dm.splits["train"])  # the second epoch read nothing from disk
    list(dm.val_dataloader())
    assert len(reads) == len(dm.splits["train"]) + len(dm.splits["val"])
    off = AudioFolderDataModule(str(root), val_fraction=0.2, test_fraction=0.2, batch_size=2, cache_mb=0)
    with caplog.at_level(logging.INFO, logger="omniformer"):
        off.setup()
    assert off.cache is None and "audio decode cache off (data.cache_mb=0)" in caplog.text
    assert all(torch.isfinite(b).all() for b in first)


def test_the_spoken_digits_waveforms_are_the_same_with_and_without_the_cache(tmp_path):
    from omniformer.data import SpokenDigitsDataModule

    root = tmp_path / "fsdd"
    shutil.copytree(FIXTURES / "fsdd", root)
    cached = SpokenDigitsDataModule(str(root), val_takes=1, batch_size=8)
    plain = SpokenDigitsDataModule(str(root), val_takes=1, batch_size=8, cache_mb=0)
    for dm in (cached, plain):
        dm.setup()
    for _ in range(2):  # from disk, then from memory
        for a, b in zip(cached.val_dataloader(), plain.val_dataloader()):
            assert all(torch.equal(x, y) for x, y in zip(a, b))
