"""Paired (media, text) data: manifest parsing, bad rows named, splits, batches, the datasets hook."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from omniformer.data.manifest import read_manifest
from omniformer.data.paired import VOCAB_FILE, PairedDataModule
from omniformer.data.paired_batch import PairedBatch
from omniformer.data.paired_manifest import PairedManifestDataModule
from omniformer.prefix_files import MEDIA_FILE
from omniformer.resume import ResumableLoader
from tests.helpers.paths import FIXTURES

CLIPS = sorted((FIXTURES / "fsdd" / "recordings").glob("*.wav"))  # 0_theo_{0,5,6}, 1_theo_{0,5,6}
WORDS = {"0": "zero", "1": "one"}


def clip_folder(root: Path) -> Path:
    """The six bundled FSDD clips copied to ``root/clips``."""
    folder = root / "clips"
    folder.mkdir(parents=True, exist_ok=True)
    for clip in CLIPS:
        shutil.copy(clip, folder / clip.name)
    return folder


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def clip_rows(names: list[str]) -> list[dict]:
    return [{"audio": f"clips/{name}", "text": WORDS[name[0]]} for name in names]


def test_jsonl_paths_are_relative_to_the_manifest(tmp_path):
    clip_folder(tmp_path / "data")
    manifest = write_jsonl(tmp_path / "data" / "train.jsonl", clip_rows(["0_theo_5.wav", "1_theo_6.wav"]))
    rows = read_manifest(manifest)
    assert [row.path for row in rows] == [
        (tmp_path / "data" / "clips" / name).resolve() for name in ("0_theo_5.wav", "1_theo_6.wav")
    ]
    assert [(row.modality, row.text, row.where) for row in rows] == [
        ("audio", "zero", f"{manifest}:1"),
        ("audio", "one", f"{manifest}:2"),
    ]


def test_csv_with_crlf_and_quoted_commas(tmp_path):
    clip_folder(tmp_path)
    manifest = tmp_path / "pairs.csv"
    manifest.write_bytes(
        b'audio,text\r\nclips/0_theo_5.wav,"zero, then nothing"\r\n\r\nclips/1_theo_5.wav,"one ""1"""\r\n'
    )
    rows = read_manifest(manifest)
    assert [row.text for row in rows] == ["zero, then nothing", 'one "1"']
    assert [row.where.rsplit(":", 1)[1] for row in rows] == ["2", "4"]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"text": "zero"}, "no media column"),
        ({"audio": "clips/0_theo_5.wav", "text": "  "}, "empty or missing 'text'"),
        ({"audio": "clips/0_theo_5.wav"}, "empty or missing 'text'"),
        ({"audio": "clips/0_theo_5.wav", "image": "x.png", "text": "zero"}, "unknown column mix"),
        ({"audio": "clips/0_theo_5.wav", "label": 0, "text": "zero"}, "unknown column mix"),
        ({"audio": "clips/missing.wav", "text": "zero"}, "does not exist"),
    ],
)
def test_a_bad_row_is_named_with_its_line(tmp_path, row, message):
    clip_folder(tmp_path)
    manifest = write_jsonl(tmp_path / "m.jsonl", [*clip_rows(["0_theo_5.wav", "1_theo_5.wav"]), row])
    with pytest.raises((ValueError, FileNotFoundError), match=message) as err:
        read_manifest(manifest)
    assert f"{manifest}:3" in str(err.value)


def test_a_csv_row_without_its_file_is_named(tmp_path):
    clip_folder(tmp_path)
    manifest = tmp_path / "m.csv"
    manifest.write_text("text,audio\nzero,clips/0_theo_5.wav\none,clips/nope.wav\n")
    with pytest.raises(FileNotFoundError, match=rf"{manifest}:3: audio file .*nope.wav does not exist"):
        read_manifest(manifest)


def test_an_unreadable_clip_names_its_manifest_line(tmp_path):
    clip_folder(tmp_path)
    (tmp_path / "clips" / "broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    train = write_jsonl(tmp_path / "t.jsonl", clip_rows(["0_theo_5.wav", "1_theo_5.wav", "0_theo_6.wav"]))
    val = write_jsonl(tmp_path / "v.jsonl", [{"audio": "clips/broken.wav", "text": "one"}])
    data = PairedManifestDataModule(train=str(train), val=str(val), test_fraction=0.3, sample_rate=8000)
    data.setup("fit")
    with pytest.raises(ValueError, match=rf"{val}:1: cannot read audio file .*broken.wav"):
        next(iter(data.val_dataloader()))


def test_held_out_splits_never_share_a_file(tmp_path):
    clip_folder(tmp_path)
    names = [clip.name for clip in CLIPS]
    rows = clip_rows(names) + [{"audio": f"clips/{n}", "text": WORDS[n[0]] + " again"} for n in names]
    manifest = write_jsonl(tmp_path / "all.jsonl", rows)
    data = PairedManifestDataModule(manifest=str(manifest), val_fraction=0.2, test_fraction=0.2, split_seed=3)
    splits = data.rows()
    files = {split: {row.path for row in split_rows} for split, split_rows in splits.items()}
    assert sum(len(split_rows) for split_rows in splits.values()) == len(rows)
    assert all(files[split] for split in ("train", "val", "test"))
    assert not files["train"] & files["val"] and not files["train"] & files["test"]
    assert not files["val"] & files["test"]
    again = PairedManifestDataModule(
        manifest=str(manifest), val_fraction=0.2, test_fraction=0.2, split_seed=3
    )
    assert again.rows() == splits  # seeded


def test_a_file_in_two_manifests_is_refused(tmp_path):
    clip_folder(tmp_path)
    train = write_jsonl(tmp_path / "t.jsonl", clip_rows(["0_theo_5.wav", "1_theo_5.wav", "0_theo_6.wav"]))
    val = write_jsonl(tmp_path / "v.jsonl", clip_rows(["1_theo_6.wav", "0_theo_6.wav"]))
    with pytest.raises(ValueError, match=rf"{val}:2: .*0_theo_6.wav \(val\) is also in {train}:3 \(train\)"):
        PairedManifestDataModule(train=str(train), val=str(val), test_fraction=0.3, sample_rate=8000)


def test_audio_batches_pad_clips_and_end_texts(tmp_path):
    clip_folder(tmp_path)
    train = write_jsonl(tmp_path / "t.jsonl", clip_rows(["0_theo_5.wav", "1_theo_5.wav", "0_theo_6.wav"]))
    val = write_jsonl(tmp_path / "v.jsonl", clip_rows(["0_theo_0.wav", "1_theo_0.wav"]))
    test = write_jsonl(tmp_path / "e.jsonl", clip_rows(["1_theo_6.wav"]))
    data = PairedManifestDataModule(train=str(train), val=str(val), test=str(test), sample_rate=8000)
    data.setup("fit")
    spec = data.spec()
    assert spec == {"modality": "audio", "vocab_size": 6, "eos_id": 5, "max_text_len": 5, "sample_rate": 8000}
    batch = next(iter(data.val_dataloader()))
    assert isinstance(batch, PairedBatch)
    media, lengths, text, text_lengths = batch
    assert media.shape == (2, int(lengths.max())) and lengths.min() < lengths.max()
    assert (media[lengths.argmin(), int(lengths.min()) :] == 0).all()
    assert text_lengths.tolist() == [5, 4]  # "zero" + end, "one" + end
    assert data.vocab.decode(text[0, :4].tolist()) == "zero" and text[0, 4] == data.eos_id
    assert text[1, 3:].tolist() == [data.eos_id, data.eos_id]  # end, then padding with the end id
    assert isinstance(data.train_dataloader(), ResumableLoader)  # exact mid-epoch resume

    restored = PairedManifestDataModule(train=str(train), val=str(val), test=str(test), sample_rate=8000)
    restored.use_artifacts(data.artifacts())
    assert set(data.artifacts()) == {VOCAB_FILE, MEDIA_FILE}  # the characters; how clips are read
    restored.setup("validate")
    assert restored.vocab.chars == data.vocab.chars


def test_texts_outside_the_checkpoint_vocabulary_are_named(tmp_path):
    clip_folder(tmp_path)
    train = write_jsonl(tmp_path / "t.jsonl", clip_rows(["0_theo_5.wav", "1_theo_5.wav", "0_theo_6.wav"]))
    trained = PairedManifestDataModule(
        train=str(train), val_fraction=0.3, test_fraction=0.3, sample_rate=8000
    )
    trained.setup("fit")
    other = write_jsonl(tmp_path / "o.jsonl", [*clip_rows(["0_theo_5.wav", "1_theo_5.wav"]), {
        "audio": "clips/0_theo_6.wav", "text": "zebra"}])  # fmt: skip
    data = PairedManifestDataModule(train=str(other), val_fraction=0.3, test_fraction=0.3, sample_rate=8000)
    data.use_artifacts(trained.artifacts())
    with pytest.raises(ValueError, match=r"'zebra' has characters \['a', 'b'\]"):
        data.setup("validate")


def digit_strips(root: Path) -> list[dict]:
    """Variable-width strips of the two bundled MNIST test digits (7 and 2), as PNG files."""
    digits = {
        label: np.asarray(Image.open(FIXTURES / "mnist" / "png" / f"t10k_{i}_label{label}.png").convert("L"))
        for i, label in ((0, "7"), (1, "2"))
    }
    rows = []
    for text in ("7", "2", "72", "277", "27", "7 2"):
        labels = text.replace(" ", "")
        gap = np.zeros((28, 3), dtype=np.uint8)  # "7 2": a 3-pixel gap, 59 pixels wide
        strip = np.concatenate([digits[c] if c != " " else gap for c in text], axis=1)
        name = f"strip_{len(rows)}.png"
        Image.fromarray(strip).save(root / name)
        rows.append({"image": name, "text": " ".join(labels)})
    return rows


def test_image_strips_are_padded_with_their_widths(tmp_path):
    manifest = write_jsonl(tmp_path / "strips.jsonl", digit_strips(tmp_path))
    data = PairedManifestDataModule(
        manifest=str(manifest), val_fraction=0.2, test_fraction=0.2, patch_size=4, batch_size=4
    )
    data.setup("fit")
    assert data.spec()["in_channels"] == 1 and data.spec()["image_size"] == 28
    for batch in data.train_dataloader():
        media, widths, _, _ = batch
        assert media.shape[1:3] == (1, 28) and media.shape[-1] % 4 == 0
        assert media.shape[-1] >= int(widths.max()) and set(widths.tolist()) <= {28, 56, 59, 84}
        assert media.max() <= 1 and media.min() >= 0
        for row, width in enumerate(widths.tolist()):
            assert (media[row, ..., width:] == 0).all()


class Pairs(torch.utils.data.Dataset):
    """A plug-in dataset of (waveform, text) pairs, as another module would make."""

    def __init__(self, texts: list[str]) -> None:
        self.items = [(torch.randn(100 * (i + 1)), t) for i, t in enumerate(texts)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.items[index]


class DigitPairs(PairedDataModule):
    def make_splits(self):
        return {"train": Pairs(["3 9", "2"]), "val": Pairs(["1 0"]), "test": Pairs(["4"])}


@pytest.mark.parametrize("how", ["subclass", "datasets"])
def test_any_dataset_of_pairs_plugs_in(how):
    if how == "subclass":
        data = DigitPairs(modality="audio", sample_rate=8000, batch_size=2)
    else:
        splits = {"train": Pairs(["3 9", "2"]), "val": Pairs(["1 0"]), "test": Pairs(["4"])}
        data = PairedDataModule(modality="audio", sample_rate=8000, batch_size=2, datasets=splits)
    data.setup("fit")
    assert data.vocab.chars == [" ", "0", "1", "2", "3", "4", "9"]
    assert data.spec()["max_text_len"] == 4
    media, _, _, text_lengths = next(iter(data.val_dataloader()))
    assert media.shape == (1, 100) and text_lengths.tolist() == [4]


def test_a_module_without_splits_says_what_to_override():
    with pytest.raises(NotImplementedError, match="override make_splits"):
        PairedDataModule(modality="audio", sample_rate=8000).setup("fit")
