"""Audio data: reading, mono mixing, resampling, batching, the three data modules and every bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hydra.utils import instantiate

from omniformer.config import check_train_config
from omniformer.data import AudioFolderDataModule, SpeechCommandsDataModule, SpokenDigitsDataModule
from omniformer.data.audio import LengthBucketSampler
from omniformer.data.audio_files import read_audio
from omniformer.data.collate import PadCollate
from tests.helpers.paths import FIXTURES
from tests.helpers.runs import compose_train

FSDD_FIXTURE = FIXTURES / "fsdd"


def tone(freq: float, seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    """A sine tone (samples×channels when ``channels > 1``)."""
    t = np.arange(round(seconds * rate)) / rate
    wave = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def dominant_frequency(wave: torch.Tensor, rate: int) -> float:
    spectrum = torch.fft.rfft(wave).abs()
    return float(spectrum.argmax()) * rate / len(wave)


# ---------------------------------------------------------------------------------------------- reading
def test_stereo_is_mixed_to_mono(tmp_path):
    left = tone(440, 0.25, 8000)
    right = np.zeros_like(left)
    sf.write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 8000)
    wave, rate = read_audio(tmp_path / "stereo.wav")
    assert rate == 8000 and wave.ndim == 1 and len(wave) == len(left)
    np.testing.assert_allclose(wave.numpy(), left / 2, atol=1e-4)


@pytest.mark.parametrize(("orig", "target"), [(44100, 16000), (8000, 16000), (16000, 16000)])
def test_resampling_keeps_duration_and_pitch(tmp_path, orig, target):
    sf.write(tmp_path / "a.flac", tone(1000, 0.5, orig, channels=2), orig)
    wave, rate = read_audio(tmp_path / "a.flac", target)
    assert rate == target
    assert abs(len(wave) - 0.5 * target) <= 1
    assert dominant_frequency(wave, target) == pytest.approx(1000, abs=5)


def test_ogg_is_read(tmp_path):
    sf.write(tmp_path / "a.ogg", tone(500, 0.3, 16000), 16000, format="OGG", subtype="VORBIS")
    wave, rate = read_audio(tmp_path / "a.ogg", 16000)
    assert rate == 16000 and abs(len(wave) - 4800) < 400


def test_bad_files_are_named(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.wav is empty \(0 bytes\)"):
        read_audio(tmp_path / "empty.wav")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" * 3)
    with pytest.raises(ValueError, match=r"corrupt\.wav is not a readable audio file"):
        read_audio(tmp_path / "corrupt.wav")
    sf.write(tmp_path / "silent.wav", np.zeros(0, dtype=np.float32), 8000)
    with pytest.raises(ValueError, match=r"silent\.wav has zero length"):
        read_audio(tmp_path / "silent.wav")
    (tmp_path / "song.mp3").write_bytes(b"ID3")
    with pytest.raises(ValueError, match=r"song\.mp3: unsupported audio format '\.mp3'"):
        read_audio(tmp_path / "song.mp3")
    with pytest.raises(FileNotFoundError, match=r"missing\.wav does not exist"):
        read_audio(tmp_path / "missing.wav")


# ---------------------------------------------------------------------------------------------- batching
def test_collate_variable_and_fixed():
    clips = [(torch.ones(5), 1), (torch.ones(3), 0)]
    waves, lengths, labels = PadCollate()(clips)
    assert waves.shape == (2, 5) and lengths.tolist() == [5, 3] and labels.tolist() == [1, 0]
    assert waves[1, 3:].abs().sum() == 0
    waves, labels = PadCollate(fixed_samples=4)(clips)
    assert waves.shape == (2, 4) and waves[1].tolist() == [1, 1, 1, 0]


def test_length_buckets_group_similar_lengths_and_cover_every_index():
    lengths = [int(v) for v in np.random.default_rng(0).integers(100, 10_000, size=1000)]
    sampler = LengthBucketSampler(lengths, batch_size=16, seed=1)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == list(range(1000)) and first != second  # a new order each epoch
    sampler.set_epoch(0)
    assert list(sampler) == first  # deterministic per (seed, epoch)
    spread = np.mean([np.ptp([lengths[i] for i in first[b : b + 16]]) for b in range(0, 1000, 16)])
    assert spread < 0.2 * np.ptp(lengths)  # a random batch would span most of the range


# ---------------------------------------------------------------------------------------------- FSDD
def test_spoken_digits_standard_split_on_fixture():
    dm = SpokenDigitsDataModule(str(FSDD_FIXTURE), val_takes=1, batch_size=2)
    dm.setup()
    names = {split: sorted(p.name for p, _ in items) for split, items in dm.splits.items()}
    assert names["test"] == ["0_theo_0.wav", "1_theo_0.wav"]
    assert names["val"] == ["0_theo_5.wav", "1_theo_5.wav"]
    assert names["train"] == ["0_theo_6.wav", "1_theo_6.wav"]
    assert dm.spec() == {"num_classes": 2, "class_names": ["0", "1"], "sample_rate": 8000}
    waves, lengths, labels = next(iter(dm.test_dataloader()))
    assert waves.shape[0] == 2 and waves.shape[1] == int(lengths.max()) and sorted(labels.tolist()) == [0, 1]
    # the recordings folder itself is accepted as root too
    assert (
        len(SpokenDigitsDataModule(str(FSDD_FIXTURE / "recordings"), val_takes=1).find_splits()[1]["test"])
        == 2
    )


def test_spoken_digits_bad_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SpokenDigitsDataModule(str(tmp_path / "nowhere")).setup()
    with pytest.raises(FileNotFoundError, match="recordings/"):
        SpokenDigitsDataModule(str(tmp_path)).setup()
    (tmp_path / "recordings").mkdir()
    sf.write(tmp_path / "recordings" / "hello.wav", tone(300, 0.1, 8000), 8000)
    with pytest.raises(ValueError, match=r"hello\.wav: not an FSDD file name"):
        SpokenDigitsDataModule(str(tmp_path)).setup()


@pytest.mark.parametrize("content", [b"", b"RIFFgarbage"])
def test_corrupt_clip_in_a_dataset_is_named_when_loaded(tmp_path, content):
    root = tmp_path / "fsdd"
    shutil.copytree(FSDD_FIXTURE, root)
    (root / "recordings" / "1_theo_6.wav").write_bytes(content)
    dm = SpokenDigitsDataModule(str(root), val_takes=1, batch_size=2)
    dm.setup()
    with pytest.raises(ValueError, match=r"1_theo_6\.wav is (empty|not a readable)"):
        next(iter(dm.train_dataloader()))


# ---------------------------------------------------------------------------------------------- AudioFolder
def make_tone_folder(root: Path, per_class: int = 5) -> Path:
    """Two classes of generated tones (low at 8 kHz mono, high at 22.05 kHz stereo), mixed lengths."""
    for name, freq, rate, channels, suffix in (
        ("high", 2000, 22050, 2, ".flac"),
        ("low", 200, 8000, 1, ".wav"),
    ):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            sf.write(root / name / f"{i}{suffix}", tone(freq, 0.2 + 0.1 * i, rate, channels), rate)
    (root / "low" / ".DS_Store").write_bytes(b"junk")  # hidden: skipped
    (root / "low" / "notes.txt").write_text("recorded in the garden")  # not audio: skipped
    return root


def test_audio_folder_with_generated_tones(tmp_path):
    root = make_tone_folder(tmp_path / "tones")
    dm = AudioFolderDataModule(
        str(root), val_fraction=0.2, test_fraction=0.2, sample_rate=16000, batch_size=4
    )
    dm.setup()
    assert dm.spec() == {"num_classes": 2, "class_names": ["high", "low"], "sample_rate": 16000}
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 6, "val": 2, "test": 2}
    waves, lengths, labels = next(iter(dm.train_dataloader()))
    assert waves.dtype == torch.float32 and waves.ndim == 2
    for wave, n, label in zip(waves, lengths, labels):
        expected = 2000 if label == 0 else 200
        assert dominant_frequency(wave[:n], 16000) == pytest.approx(expected, rel=0.05)
    again = AudioFolderDataModule(str(root), val_fraction=0.2, test_fraction=0.2)
    again.setup()
    assert again.splits == dm.splits  # deterministic split


def test_audio_folder_fixed_batching_crops_and_pads(tmp_path):
    root = make_tone_folder(tmp_path / "tones")
    dm = AudioFolderDataModule(str(root), sample_rate=8000, batching="fixed", max_seconds=0.25, batch_size=10)
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    assert len(batch) == 2 and batch[0].shape[1] == 2000
    with pytest.raises(ValueError, match=r"set data\.max_seconds"):
        AudioFolderDataModule(str(root), batching="fixed")


def test_audio_folder_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        AudioFolderDataModule(str(tmp_path / "nope")).setup()
    root = make_tone_folder(tmp_path / "tones")
    (root / "low" / "clip.m4a").write_bytes(b"\x00")
    with pytest.raises(ValueError, match=r"clip\.m4a: unsupported audio format '\.m4a'"):
        AudioFolderDataModule(str(root)).setup()
    (root / "low" / "clip.m4a").unlink()
    (root / "empty_class").mkdir()
    with pytest.raises(FileNotFoundError, match="empty_class holds no"):
        AudioFolderDataModule(str(root)).setup()
    shutil.rmtree(root / "empty_class")
    shutil.rmtree(root / "high")
    with pytest.raises(ValueError, match="needs >= 2"):
        AudioFolderDataModule(str(root)).setup()
    with pytest.raises(ValueError, match="val_fraction"):
        AudioFolderDataModule(str(root), val_fraction=0.6, test_fraction=0.5)


# ---------------------------------------------------------------------------------- AudioFolder split folders
def speakers_folder(root: Path, layout: dict[str, list[str]]) -> Path:
    """``root/<split>/<digit>/<speaker>_<take>.wav`` from the FSDD fixture's clips, one set of takes
    (0, 5, 6) per speaker: ``layout`` maps each split folder to the speakers it holds."""
    for split, speakers in layout.items():
        for speaker in speakers:
            for clip in sorted((FSDD_FIXTURE / "recordings").glob("*.wav")):
                digit, _, take = clip.stem.split("_")
                (root / split / digit).mkdir(parents=True, exist_ok=True)
                shutil.copy(clip, root / split / digit / f"{speaker}_{take}.wav")
    return root


def speakers(items) -> set[str]:
    return {path.stem.split("_")[0] for path, _ in items}


def test_audio_folder_holds_a_speaker_out_with_a_test_folder(tmp_path):
    layout = {"train": ["theo", "jackson", "yweweler"], "test": ["nicolas"]}
    root = speakers_folder(tmp_path / "digits", layout)
    dm = AudioFolderDataModule(str(root), val_fraction=0.2, test_fraction=0.2, sample_rate=8000, batch_size=2)
    dm.setup()
    assert dm.spec()["class_names"] == ["0", "1"]
    # the whole held-out speaker is the test split, and nowhere else; validation is held out of train/
    assert speakers(dm.splits["test"]) == {"nicolas"} and len(dm.splits["test"]) == 6
    assert "nicolas" not in speakers(dm.splits["train"]) | speakers(dm.splits["val"])
    per_class = [sum(label == c for _, label in dm.splits["val"]) for c in (0, 1)]
    assert per_class == [2, 2] and len(dm.splits["train"]) == 14  # round(9 · 0.2) of each class
    again = AudioFolderDataModule(str(root), val_fraction=0.2, test_fraction=0.2)
    again.setup()
    assert again.splits == dm.splits  # deterministic
    waves, lengths, labels = next(iter(dm.test_dataloader()))
    assert waves.shape[0] == 2 == len(labels) and int(lengths.max()) == waves.shape[1]


def test_audio_folder_with_every_split_folder_holds_nothing_out(tmp_path):
    root = speakers_folder(tmp_path / "digits", {"train": ["theo", "jackson"], "val": ["george"]})
    shutil.copytree(root / "val" / "1", root / "test" / "1")  # a test folder with one class is fine
    dm = AudioFolderDataModule(str(root), sample_rate=8000)
    dm.setup()
    assert {k: speakers(v) for k, v in dm.splits.items()} == {
        "train": {"theo", "jackson"},
        "val": {"george"},
        "test": {"george"},
    }
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 12, "val": 6, "test": 3}
    assert {label for _, label in dm.splits["test"]} == {1}  # "1" keeps its training label


def test_audio_folder_refuses_mixed_layouts_and_unknown_split_classes(tmp_path):
    flat = make_tone_folder(tmp_path / "tones")
    shutil.copytree(flat / "low", flat / "val")  # a class literally named val, no train/
    with pytest.raises(ValueError, match=r"has a 'val' folder but no 'train' folder: lay the data out as"):
        AudioFolderDataModule(str(flat)).setup()
    shutil.copytree(flat / "high", flat / "train")
    with pytest.raises(ValueError, match=r"split folders \(train, val\) beside other folders \(high, low\)"):
        AudioFolderDataModule(str(flat)).setup()
    nested = speakers_folder(tmp_path / "digits", {"train": ["theo"], "val": ["george"]})
    shutil.copytree(nested / "val" / "1", nested / "val" / "7")
    with pytest.raises(ValueError, match=r"val/7 is a class the training folder .* does not have"):
        AudioFolderDataModule(str(nested)).setup()


def test_audio_folder_refuses_a_class_literally_named_train(tmp_path):
    """train/ and test/ holding clips directly are two classes named so, not a split layout."""
    root = tmp_path / "words"
    for name in ("train", "test"):
        (root / name).mkdir(parents=True)
        sf.write(root / name / "a.wav", tone(300, 0.2, 8000), 8000)
    with pytest.raises(
        ValueError, match=r"train holds files but no class folders, as if 'train' were a class: lay"
    ):
        AudioFolderDataModule(str(root)).setup()


# ---------------------------------------------------------------------------------------------- checkpoints
def test_artifacts_round_trip_and_sample_rate_mismatch_resamples(tmp_path, caplog):
    root = make_tone_folder(tmp_path / "tones")
    trained = AudioFolderDataModule(str(root), sample_rate=16000)
    trained.setup()
    artifacts = trained.artifacts()
    assert json.loads(artifacts["classes.json"]) == ["high", "low"]
    assert json.loads(artifacts["audio.json"]) == {"sample_rate": 16000}

    # a predict-time config asking for another rate: the checkpoint's rate wins, inputs are resampled
    other = AudioFolderDataModule(str(root), sample_rate=8000)
    with caplog.at_level("WARNING", logger="omniformer"):
        other.use_artifacts(artifacts)
    assert other.sample_rate == 16000 and "resampled to 16000 Hz" in caplog.text
    sf.write(tmp_path / "q.wav", tone(1000, 0.5, 44100, channels=2), 44100)
    waves, lengths = other.load_inputs([str(tmp_path / "q.wav")])
    assert lengths.tolist() == [8000] and waves.shape == (1, 8000)
    assert dominant_frequency(waves[0], 16000) == pytest.approx(1000, abs=5)
    with pytest.raises(ValueError, match=r"clip\.aiff: unsupported audio format"):
        other.load_inputs([str(tmp_path / "clip.aiff")])


def test_checkpoint_classes_fix_the_label_order(tmp_path):
    root = make_tone_folder(tmp_path / "tones")
    dm = AudioFolderDataModule(str(root))
    dm.use_artifacts({"classes.json": json.dumps(["low", "high", "other"])})
    dm.setup()
    assert dm.spec()["class_names"] == ["low", "high", "other"]
    assert {label for p, label in dm.splits["train"] if p.parent.name == "low"} == {0}
    strict = AudioFolderDataModule(str(root))
    strict.use_artifacts({"classes.json": json.dumps(["low", "mid"])})
    with pytest.raises(ValueError, match=r"classes \['high'\] are not among the 2 classes"):
        strict.setup()


# ------------------------------------------------------------------------------------ Speech Commands
def make_speech_commands(root: Path) -> Path:
    """A tiny Speech Commands v0.02 tree in torchaudio's on-disk layout, with the official lists."""
    base = root / "SpeechCommands" / "speech_commands_v0.02"
    clips = {
        "yes": ["aa11_nohash_0", "bb22_nohash_0", "cc33_nohash_0", "dd44_nohash_1"],
        "no": ["aa11_nohash_0", "bb22_nohash_0", "cc33_nohash_0", "dd44_nohash_0"],
    }
    for word, names in clips.items():
        (base / word).mkdir(parents=True)
        for i, name in enumerate(names):
            sf.write(base / word / f"{name}.wav", tone(300 + 100 * i, 1.0, 16000), 16000, subtype="PCM_16")
    (base / "_background_noise_").mkdir()
    sf.write(
        base / "_background_noise_" / "white_noise.wav", np.random.default_rng(0).normal(size=16000), 16000
    )
    (base / "validation_list.txt").write_text("yes/bb22_nohash_0.wav\nno/bb22_nohash_0.wav\n")
    (base / "testing_list.txt").write_text("yes/cc33_nohash_0.wav\nno/cc33_nohash_0.wav\n")
    (base / "README.md").write_text("fixture")
    return root


def test_speech_commands_official_lists(tmp_path):
    root = make_speech_commands(tmp_path)
    dm = SpeechCommandsDataModule(
        str(root), sample_rate=8000, batching="fixed", max_seconds=1.0, batch_size=8
    )
    dm.setup()
    assert dm.spec() == {"num_classes": 2, "class_names": ["no", "yes"], "sample_rate": 8000}
    rel = {s: sorted(f"{p.parent.name}/{p.name}" for p, _ in items) for s, items in dm.splits.items()}
    assert rel["val"] == ["no/bb22_nohash_0.wav", "yes/bb22_nohash_0.wav"]
    assert rel["test"] == ["no/cc33_nohash_0.wav", "yes/cc33_nohash_0.wav"]
    assert len(rel["train"]) == 4 and not any("_background_noise_" in r for r in rel["train"])
    waves, _ = next(iter(dm.train_dataloader()))
    assert waves.shape == (4, 8000)  # resampled 16 kHz → 8 kHz, fixed 1 s


def test_speech_commands_missing_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"set data\.download=true"):
        SpeechCommandsDataModule(str(tmp_path)).setup()
    with pytest.raises(ValueError, match=r"data\.version"):
        SpeechCommandsDataModule(str(tmp_path), version="v3")


# ---------------------------------------------------------------------------------------------- truncated
def truncated_fsdd(tmp_path: Path, name: str = "1_theo_6.wav") -> tuple[Path, Path]:
    """A copy of the FSDD fixture whose ``name`` lost the second half of its bytes (header intact)."""
    root = tmp_path / "fsdd"
    shutil.copytree(FSDD_FIXTURE, root)
    clip = root / "recordings" / name
    data = clip.read_bytes()
    clip.write_bytes(data[: len(data) // 2])
    return root, clip


def test_truncated_wav_is_named_with_frames_declared_and_read(tmp_path):
    root, clip = truncated_fsdd(tmp_path)
    declared = sf.info(str(FSDD_FIXTURE / "recordings" / clip.name)).frames
    held = sf.read(str(clip))[0].shape[0]  # libsndfile reads what is there without a word
    assert held < declared
    message = rf"{clip} is truncated: its header declares {declared} frames but the file holds {held}"
    with pytest.raises(ValueError, match=message):
        read_audio(clip)
    dm = SpokenDigitsDataModule(str(root), val_takes=1, batch_size=2)
    dm.setup()
    with pytest.raises(ValueError, match=message):  # bucketing reads every header first
        dm.train_dataloader()
    fixed = SpokenDigitsDataModule(str(root), val_takes=1, batch_size=2, batching="fixed", max_seconds=1.0)
    fixed.setup()
    with pytest.raises(ValueError, match=message):
        next(iter(fixed.train_dataloader()))
    with pytest.raises(ValueError, match=message):
        fixed.load_inputs([str(clip)])


def test_whole_wavs_with_extra_chunks_or_an_unknown_length_still_read(tmp_path):
    whole = FSDD_FIXTURE / "recordings" / "0_theo_5.wav"
    data = whole.read_bytes()
    assert data[36:40] == b"data"
    # A chunk after the audio, and a streaming writer's header (data size 0xFFFFFFFF, never fixed).
    (tmp_path / "tail.wav").write_bytes(data + b"LIST\x04\x00\x00\x00abcd")
    streamed = bytearray(data)
    streamed[40:44] = b"\xff\xff\xff\xff"
    (tmp_path / "streamed.wav").write_bytes(bytes(streamed))
    reference = read_audio(whole)[0]
    for name in ("tail.wav", "streamed.wav"):
        torch.testing.assert_close(read_audio(tmp_path / name)[0], reference)


def test_skip_corrupt_skips_and_counts_truncated_and_unreadable_clips(tmp_path, caplog):
    root, _ = truncated_fsdd(tmp_path)
    (root / "recordings" / "0_theo_0.wav").write_bytes(b"RIFFgarbage")
    with caplog.at_level("WARNING", logger="omniformer"):
        dm = SpokenDigitsDataModule(str(root), val_takes=1, batch_size=2, skip_corrupt=True)
        dm.setup()
    assert "skipped 2 unreadable clip(s)" in caplog.text and "data.skip_corrupt=true" in caplog.text
    assert sorted(Path(p).name for p in dm.skipped) == ["0_theo_0.wav", "1_theo_6.wav"]
    assert [p.name for p, _ in dm.splits["train"]] == ["0_theo_6.wav"]
    assert [p.name for p, _ in dm.splits["test"]] == ["1_theo_0.wav"]
    waves, lengths, labels = next(iter(dm.train_dataloader()))
    assert labels.tolist() == [0] and waves.shape == (1, int(lengths[0]))
    assert not SpokenDigitsDataModule(str(FSDD_FIXTURE)).skip_corrupt  # off unless asked for


@pytest.mark.slow
@pytest.mark.parametrize("data", ["spoken_digits", "speech_commands", "audio_folder"])
def test_skip_corrupt_is_a_config_key_of_every_audio_data_config(data):
    cfg = compose_train(
        ["task=audio_classification", f"data={data}", "data.root=/x", "data.skip_corrupt=true"]
    )
    check_train_config(cfg)
    assert instantiate(cfg.data).skip_corrupt is True
    assert compose_train(["task=audio_classification", f"data={data}"]).data.skip_corrupt is False
