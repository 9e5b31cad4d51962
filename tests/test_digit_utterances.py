"""Spoken-digit utterances from real FSDD clips: splits, held-out speakers, determinism, text, silences."""

from __future__ import annotations

import re
import shutil

import pytest
import torch

from omniformer.data.audio_files import read_audio
from omniformer.data.digit_utterances import (
    DIGIT_WORDS,
    SPLITS,
    SpokenDigitUtterances,
    fsdd_clips,
    split_clips,
)
from tests.helpers.paths import SHARED_DATA, needs_shared_data


def datasets(root, **kwargs):
    return {split: SpokenDigitUtterances(root=root, split=split, size=40, **kwargs) for split in SPLITS}


def test_splits_never_share_a_clip_and_test_is_takes_0_to_4(two_speakers):
    data = datasets(two_speakers)
    paths = {split: {clip.path for clip in d.clips} for split, d in data.items()}
    assert not paths["train"] & paths["val"] and not paths["train"] & paths["test"]
    assert not paths["val"] & paths["test"]
    assert sum(map(len, paths.values())) == len(fsdd_clips(two_speakers))  # nothing unused
    assert {clip.take for clip in data["test"].clips} == {0, 3}
    assert all(clip.take >= 5 for split in ("train", "val") for clip in data[split].clips)
    for split, dataset in data.items():  # every utterance is made of its own split's clips only
        used = {clip.path for index in range(len(dataset)) for clip in dataset.plan(index).clips}
        assert used <= paths[split], split


def test_val_share_is_seeded_per_speaker_and_digit(two_speakers):
    clips = fsdd_clips(two_speakers)
    first = split_clips(clips, val_fraction=0.3, split_seed=0)
    assert first == split_clips(clips, val_fraction=0.3, split_seed=0)
    # each speaker and digit keeps takes for training and gives one to validation
    groups = {(c.speaker, c.digit) for c in first["train"]}
    assert groups == {(c.speaker, c.digit) for c in first["val"]} and len(groups) == 4
    moved = [split_clips(clips, val_fraction=0.3, split_seed=seed)["val"] for seed in range(6)]
    assert any(val != first["val"] for val in moved)


@pytest.mark.parametrize("speakers", [["theo"], "theo"])
def test_held_out_speaker_appears_only_in_test(two_speakers, speakers):
    data = datasets(two_speakers, test_speakers=speakers)
    assert {clip.speaker for clip in data["test"].clips} == {"theo"}
    assert {clip.take for clip in data["test"].clips} == {0, 5, 6}  # all of theo's takes
    for split in ("train", "val"):
        assert {clip.speaker for clip in data[split].clips} == {"nicolas"}
        assert all(clip.take >= 5 for clip in data[split].clips)  # nicolas's test take stays unused
    assert {data["test"].plan(i).speaker for i in range(40)} == {"theo"}


def test_one_speaker_per_utterance(two_speakers):
    dataset = SpokenDigitUtterances(root=two_speakers, split="train", size=40)
    plans = [dataset.plan(i) for i in range(40)]
    assert all({clip.speaker for clip in plan.clips} == {plan.speaker} for plan in plans)
    assert {plan.speaker for plan in plans} == {"theo", "nicolas"}


def test_items_are_a_pure_function_of_seed_split_and_index(two_speakers):
    first = SpokenDigitUtterances(root=two_speakers, split="train", size=40, seed=3)
    again = SpokenDigitUtterances(root=two_speakers, split="train", size=40, seed=3)
    for index in (7, 0, 39):  # any order: nothing carries over from one item to the next
        (wave_a, text_a), (wave_b, text_b) = first[index], again[index]
        assert text_a == text_b and torch.equal(wave_a, wave_b)
    plans = [first.plan(i) for i in range(40)]
    assert len(set(plans)) > 30  # different indices, different utterances
    other = SpokenDigitUtterances(root=two_speakers, split="train", size=40, seed=4)
    assert [other.plan(i) for i in range(40)] != plans
    val = SpokenDigitUtterances(root=two_speakers, split="val", size=40, seed=3)
    assert [val.plan(i).gaps for i in range(40)] != [plan.gaps for plan in plans]
    with pytest.raises(IndexError, match="40"):
        first[40]


def test_item_format_and_text_match_the_digits(two_speakers):
    words = SpokenDigitUtterances(root=two_speakers, split="test", size=20)
    digits = SpokenDigitUtterances(root=two_speakers, split="test", size=20, text_form="digits")
    for index in range(20):
        wave, text = words[index]
        plan = words.plan(index)
        assert wave.dtype == torch.float32 and wave.ndim == 1
        assert text == " ".join(DIGIT_WORDS[d] for d in plan.digits)
        assert digits[index][1] == " ".join(map(str, plan.digits))
        assert all(clip.digit == int(clip.path.name[0]) for clip in plan.clips)


def test_digit_counts_are_configurable(two_speakers):
    default = SpokenDigitUtterances(root=two_speakers, split="train", size=200)
    assert {len(default.plan(i).clips) for i in range(200)} == {1, 2, 3, 4, 5}
    three = SpokenDigitUtterances(root=two_speakers, split="train", size=20, min_digits=3, max_digits=3)
    assert {len(three[i][1].split()) for i in range(20)} == {3}


@pytest.mark.parametrize("rate", [8000, 16000])
def test_gaps_are_silence_in_the_configured_range(two_speakers, rate):
    gap_ms = (50.0, 250.0) if rate == 8000 else (100.0, 120.0)
    dataset = SpokenDigitUtterances(
        root=two_speakers, split="train", size=12, sample_rate=rate, gap_ms=gap_ms
    )
    low, high = (round(ms * rate / 1000) for ms in gap_ms)
    for index in range(12):
        wave, _ = dataset[index]
        plan = dataset.plan(index)
        start = 0
        for position, clip in enumerate(plan.clips):
            clip_wave = read_audio(clip.path, rate)[0]  # resampled to the dataset's rate
            assert torch.equal(wave[start : start + len(clip_wave)], clip_wave)
            start += len(clip_wave)
            if position < len(plan.gaps):
                assert low <= plan.gaps[position] <= high
                assert not wave[start : start + plan.gaps[position]].any()
                start += plan.gaps[position]
        assert start == len(wave)


def test_bad_roots_and_arguments_are_named(tmp_path, two_speakers):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        SpokenDigitUtterances(root=missing, split="train")
    (tmp_path / "empty" / "recordings").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "empty" / "recordings"))):
        SpokenDigitUtterances(root=tmp_path / "empty", split="train")
    odd = tmp_path / "odd"
    shutil.copytree(two_speakers, odd)
    shutil.copy(odd / "recordings" / "0_theo_5.wav", odd / "recordings" / "zero-theo.wav")
    with pytest.raises(ValueError, match=re.escape("zero-theo.wav")):
        SpokenDigitUtterances(root=odd, split="train")
    with pytest.raises(ValueError, match="alice"):
        SpokenDigitUtterances(root=two_speakers, split="test", test_speakers=["alice"])
    with pytest.raises(ValueError, match="every speaker"):
        SpokenDigitUtterances(root=two_speakers, split="test", test_speakers=["theo", "nicolas"])
    with pytest.raises(ValueError, match="split='dev'"):
        SpokenDigitUtterances(root=two_speakers, split="dev")
    with pytest.raises(ValueError, match="gap_ms"):
        SpokenDigitUtterances(root=two_speakers, split="train", gap_ms=(300, 100))
    with pytest.raises(ValueError, match="max_digits"):
        SpokenDigitUtterances(root=two_speakers, split="train", min_digits=0)


@needs_shared_data("fsdd", "recordings")
def test_shared_fsdd_standard_and_held_out_splits():
    root = SHARED_DATA / "fsdd"
    clips = fsdd_clips(root)
    standard = split_clips(clips, val_fraction=0.1, split_seed=0)
    assert len(standard["test"]) == 300 and {c.take for c in standard["test"]} == set(range(5))
    assert len(standard["train"]) + len(standard["val"]) == 2700
    assert not {c.path for c in standard["train"]} & {c.path for c in standard["val"]}
    held = split_clips(clips, val_fraction=0.1, split_seed=0, test_speakers=["theo"])
    assert len(held["test"]) == 500 and {c.speaker for c in held["test"]} == {"theo"}
    assert "theo" not in {c.speaker for c in held["train"] + held["val"]}
    dataset = SpokenDigitUtterances(root=root, split="test", size=1000, seed=0)
    wave, text = dataset[999]
    assert wave.ndim == 1 and 1 <= len(text.split()) <= 5
