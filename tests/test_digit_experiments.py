"""The ready-made experiments of issue #15: experiment=transcribe_digits (spoken digits → words) and
experiment=read_digits (MNIST digit strings → digits) compose, pass the config checks, train in
process on the bundled fixtures, and evaluate from their checkpoints; their data modules keep
val/test fixed across training seeds and hold speakers out."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from omniformer.config import check_train_config
from omniformer.data.digit_string_pairs import DigitStringsDataModule
from omniformer.data.paired import dataset_texts
from omniformer.data.spoken_digit_pairs import SpokenDigitUtterancesDataModule
from omniformer.train import run
from tests.helpers.overrides import ON_CPU, TINY_MODEL, TINY_PAIRS
from tests.helpers.paths import FIXTURES
from tests.helpers.runs import compose_train, run_main

FSDD = FIXTURES / "fsdd"  # theo: digits 0-1, takes 0, 5, 6
MNIST = FIXTURES / "mnist"  # 20 training digits, 10 test digits
TINY_RUN = [
    *TINY_MODEL,
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.log_every_n_steps=1",
    "optim.warmup_steps=1",
    *ON_CPU,
]
EXPERIMENTS = {
    "transcribe_digits": [f"data.root={FSDD}", *TINY_PAIRS],
    "read_digits": [f"data.root={MNIST}", "data.val_images=4", *TINY_PAIRS],
}
METRICS = ("loss", "exact", "cer", "wer")


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_the_experiment_composes_and_passes_the_checks(experiment):
    cfg = compose_train([f"experiment={experiment}", *EXPERIMENTS[experiment]])
    check_train_config(cfg)
    assert cfg.task._target_.endswith("PrefixLMTask") and cfg.callbacks.checkpoint.monitor == "val_cer"
    modality = "audio" if experiment == "transcribe_digits" else "image"
    assert set(cfg.task.net.tokenizers) == {modality, "text"}
    assert list(cfg.task.net.markers.modalities) == [modality]
    assert cfg.trainer.max_steps > 0 and (cfg.model.dim, cfg.model.depth) == (128, 4)


@pytest.mark.slow
@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_the_experiment_trains_and_evaluates(experiment, tmp_path):
    results = run([f"experiment={experiment}", *EXPERIMENTS[experiment], *TINY_RUN], tmp_path)
    assert results["steps"] == 2
    assert all(f"{split}_{m}" in results for split in ("val", "test") for m in METRICS)
    assert (tmp_path / "vocab.json").is_file()
    ckpt = tmp_path / "checkpoints" / "best.ckpt"
    proc = run_main("omniformer.evaluate", f"ckpt={ckpt}", "split=val", "accelerator=cpu")
    printed = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)
    for metric in METRICS:
        assert 0 <= float(printed[f"val_{metric}"]) < 100, metric


def test_a_held_out_speaker_is_the_whole_test_split_and_nowhere_else(two_speakers):
    cfg = compose_train(
        ["experiment=transcribe_digits", f"data.root={two_speakers}", "data.test_speakers=[theo]"]
    )
    check_train_config(cfg)
    data = instantiate(cfg.data, train_size=20, val_size=10, test_size=10)
    data.setup("fit")
    speakers = {split: {clip.speaker for clip in data.splits[split].clips} for split in data.splits}
    assert speakers == {"train": {"nicolas"}, "val": {"nicolas"}, "test": {"theo"}}
    test = data.splits["test"]
    assert {clip.speaker for i in range(len(test)) for clip in test.plan(i).clips} == {"theo"}


def test_a_bare_speaker_name_holds_that_speaker_out(two_speakers):
    overrides = [f"data.root={two_speakers}", "data.test_speakers=theo"]
    cfg = compose_train(["experiment=transcribe_digits", *overrides])
    check_train_config(cfg)
    data = instantiate(cfg.data, train_size=4, val_size=4, test_size=4)
    data.setup("fit")
    assert {clip.speaker for clip in data.splits["test"].clips} == {"theo"}


@pytest.mark.parametrize(
    ("make", "root"),
    [
        (lambda **kw: SpokenDigitUtterancesDataModule(root=str(FSDD), **kw), FSDD),
        (lambda **kw: DigitStringsDataModule(root=str(MNIST), val_images=4, **kw), MNIST),
    ],
    ids=["utterances", "strings"],
)
def test_val_and_test_do_not_change_with_the_training_seed(make, root):
    texts = {}
    for seed in (1, 2):
        data = make(seed=seed, train_size=30, val_size=30, test_size=30)
        data.setup("fit")
        texts[seed] = {split: dataset_texts(data.splits[split]) for split in ("train", "val", "test")}
    assert texts[1]["val"] == texts[2]["val"] and texts[1]["test"] == texts[2]["test"]
    assert texts[1]["train"] != texts[2]["train"]


def test_the_vocabulary_is_every_character_a_transcript_can_hold():
    words = SpokenDigitUtterancesDataModule(root=str(FSDD), train_size=2, val_size=2, test_size=2)
    words.setup("fit")  # the fixture speaks only 0 and 1; the vocabulary still covers "nine"
    assert words.vocab.decode(words.vocab.encode("three nine two")) == "three nine two"
    digits = DigitStringsDataModule(root=str(MNIST), val_images=4, train_size=2, val_size=2, test_size=2)
    digits.setup("fit")
    assert digits.vocab.size == 11 and digits.spec()["eos_id"] == 11
    assert digits.spec()["patch_size"] == 7 and digits.spec()["image_size"] == 28


def test_a_bad_text_form_is_named():
    with pytest.raises(ValueError, match=r"data\.text_form='roman'"):
        DigitStringsDataModule(root=str(MNIST), text_form="roman")
