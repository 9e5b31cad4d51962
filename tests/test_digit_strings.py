"""MNIST digit strings: splits by image, t10k-only test, widths, gaps, determinism, text, bad roots."""

from __future__ import annotations

import gzip
import re
import shutil

import pytest
import torch
from torchvision.datasets.mnist import read_image_file, read_label_file

from omniformer.data.digit_strings import DIGIT_WORDS, MNIST_MEAN, MNIST_STD, SPLITS, MNISTDigitStrings
from tests.helpers.paths import FIXTURES, SHARED_DATA, needs_shared_data

ROOT = FIXTURES / "mnist"
RAW = ROOT / "MNIST" / "raw"


def strings(split, **kwargs):
    kwargs = {"size": 30, "val_size": 5, **kwargs}
    return MNISTDigitStrings(root=ROOT, split=split, **kwargs)


def digit_crops(image, plan):
    """The 28×28 uint8 crops of ``image`` where ``plan`` put each digit (gaps of zero or more)."""
    crops, left = [], 0
    for position in range(len(plan.images)):
        crops.append((image[0, :, left : left + 28] * 255).round().to(torch.uint8))
        left += 28 + (plan.gaps[position] if position < len(plan.gaps) else 0)
    return crops


def test_splits_never_share_an_image_and_test_uses_t10k_only():
    data = {split: strings(split) for split in SPLITS}
    train, val = set(data["train"].pool), set(data["val"].pool)
    assert not train & val and len(val) == 5 and train | val == set(range(20))
    t10k, t10k_labels = (
        read_image_file(str(RAW / "t10k-images-idx3-ubyte")),
        read_label_file(str(RAW / "t10k-labels-idx1-ubyte")),
    )
    train_images = read_image_file(str(RAW / "train-images-idx3-ubyte"))
    for split, dataset in data.items():
        source = t10k if split == "test" else train_images
        pool = set(dataset.pool)
        for index in range(len(dataset)):
            image, _ = dataset[index]
            plan = dataset.plan(index)
            assert set(plan.images) <= pool
            for crop, chosen in zip(digit_crops(image, plan), plan.images):
                assert torch.equal(crop, source[chosen])  # the real MNIST pixels, unchanged
            if split == "test":
                assert list(plan.digits) == [int(t10k_labels[i]) for i in plan.images]


def test_val_hold_out_is_seeded_and_independent_of_the_item_seed():
    assert strings("val", seed=0).pool == strings("val", seed=9).pool
    assert strings("val", split_seed=1).pool != strings("val", split_seed=0).pool


def test_item_format_and_text_match_the_digits():
    digits, words = strings("train"), strings("train", text_form="words")
    for index in range(10):
        image, text = digits[index]
        plan = digits.plan(index)
        assert image.dtype == torch.float32 and image.shape[:2] == (1, 28)
        assert float(image.min()) >= 0 and float(image.max()) <= 1
        assert text == " ".join(map(str, plan.digits))
        assert [int(digits.labels[i]) for i in plan.images] == list(plan.digits)
        assert words[index][1] == " ".join(DIGIT_WORDS[d] for d in plan.digits)


def test_widths_vary_and_match_the_digit_count():
    dataset = strings("train", size=60)
    widths = set()
    for index in range(60):
        image, text = dataset[index]
        assert image.shape[-1] == 28 * len(text.split())
        widths.add(image.shape[-1])
    assert widths == {28, 56, 84, 112, 140}


def test_gaps_and_overlaps_in_the_configured_range():
    gapped = strings("test", gap_px=(2, 6))
    for index in range(20):
        image, text = gapped[index]
        plan = gapped.plan(index)
        assert all(2 <= gap <= 6 for gap in plan.gaps)
        assert image.shape[-1] == plan.width == 28 * len(text.split()) + sum(plan.gaps)
        left = 28
        for gap in plan.gaps:  # the gaps are background
            assert not image[..., left : left + gap].any()
            left += gap + 28
    overlapped = strings("test", gap_px=(-4, -4), min_digits=3, max_digits=3)
    assert {overlapped[i][0].shape[-1] for i in range(5)} == {3 * 28 - 8}


def test_normalised_pixels_match_mnist_statistics():
    plain, normal = strings("train")[3][0], strings("train", normalize=True)[3][0]
    assert torch.allclose(normal, (plain - MNIST_MEAN) / MNIST_STD)


def test_items_are_a_pure_function_of_seed_split_and_index():
    first, again = strings("train", seed=5), strings("train", seed=5)
    for index in (11, 0, 29):
        assert torch.equal(first[index][0], again[index][0]) and first[index][1] == again[index][1]
    plans = [first.plan(i) for i in range(30)]
    assert len(set(plans)) > 25
    assert [strings("train", seed=6).plan(i) for i in range(30)] != plans
    with pytest.raises(IndexError, match="30"):
        first[30]


def test_gzipped_files_read_the_same(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for path in RAW.iterdir():
        with open(path, "rb") as source, gzip.open(raw / (path.name + ".gz"), "wb") as target:
            shutil.copyfileobj(source, target)
    zipped = MNISTDigitStrings(root=tmp_path, split="test", size=5)
    for index in range(5):
        assert torch.equal(zipped[index][0], strings("test", size=5)[index][0])


def test_bad_roots_and_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "MNIST" / "raw"))):
        MNISTDigitStrings(root=tmp_path, split="train")
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(RAW, raw)
    (raw / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        MNISTDigitStrings(root=tmp_path, split="test")
    images = raw / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*truncated"):
        MNISTDigitStrings(root=tmp_path, split="train", val_size=5)
    with pytest.raises(ValueError, match="gap_px"):
        MNISTDigitStrings(root=ROOT, split="test", gap_px=(-20, 0))
    with pytest.raises(ValueError, match="val_size"):
        MNISTDigitStrings(root=ROOT, split="val", val_size=20)


@needs_shared_data("MNIST", "raw")
def test_shared_mnist_splits():
    train, val = (MNISTDigitStrings(root=SHARED_DATA, split=s) for s in ("train", "val"))
    assert len(train.pool) == 55000 and len(val.pool) == 5000 and not set(train.pool) & set(val.pool)
    test = MNISTDigitStrings(root=SHARED_DATA, split="test")
    assert len(test.labels) == 10000 and len(test) == 1000
    image, text = test[999]
    assert image.shape[-1] == 28 * len(text.split())
