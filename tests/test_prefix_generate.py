"""Generating from a prefix-LM checkpoint: ``omniformer-generate audio=`` / ``image=``,
``omniformer-predict`` batching files into texts, the Python API (``omniformer.load(...).transcribe``)
and one clear error per bad input. The models are tiny runs of experiment=transcribe_digits and
experiment=read_digits on the bundled fixtures (2 steps): their texts are noise, but they must be the
same noise whichever way, and however batched, the files are read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

import omniformer
from omniformer.data.digit_strings import MNIST_MEAN, MNIST_STD
from omniformer.prefix_files import MEDIA_FILE, MediaReading, media_batch, read_media_file
from omniformer.train import run
from tests.helpers.overrides import ON_CPU, TINY_MODEL
from tests.helpers.paths import FIXTURES
from tests.helpers.runs import run_main

CLIPS = sorted((FIXTURES / "fsdd" / "recordings").glob("*.wav"))  # theo: 0 and 1, 8 kHz, lengths differ
DIGITS = sorted((FIXTURES / "mnist" / "png").glob("*.png"))  # a 7 and a 2, 28×28
TINY_PAIRS = ["data.train_size=8", "data.val_size=2", "data.test_size=2", "data.batch_size=4"]
TINY_RUN = [
    *TINY_MODEL,
    "model.max_seq_len=128",  # small enough that a long clip or a wide image overflows it
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.log_every_n_steps=1",
    "optim.warmup_steps=1",
    "test_after_fit=false",
    *ON_CPU,
]


@pytest.fixture(scope="module")
def audio_ckpt(tmp_path_factory) -> Path:
    """best.ckpt of a 2-step experiment=transcribe_digits run on the bundled FSDD clips."""
    run_dir = tmp_path_factory.mktemp("transcribe")
    run(["experiment=transcribe_digits", f"data.root={FIXTURES / 'fsdd'}", *TINY_PAIRS, *TINY_RUN], run_dir)
    return run_dir / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="module")
def image_ckpt(tmp_path_factory) -> Path:
    """best.ckpt of a 2-step experiment=read_digits run (normalised strings) on the bundled MNIST."""
    run_dir = tmp_path_factory.mktemp("read_digits")
    data = [f"data.root={FIXTURES / 'mnist'}", "data.val_images=4", "data.normalize=true", *TINY_PAIRS]
    run(["experiment=read_digits", *data, *TINY_RUN], run_dir)
    return run_dir / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="module")
def strips(tmp_path_factory) -> list[Path]:
    """Digit strips of 1, 3 and 2 digits (28 px high, widths 28, 84, 56), as PNG files."""
    folder = tmp_path_factory.mktemp("strips")
    digits = [np.asarray(Image.open(p).convert("L")) for p in DIGITS]
    paths = []
    for i, order in enumerate([[0], [1, 0, 1], [1, 1]]):
        paths.append(folder / f"strip{i}.png")
        Image.fromarray(np.concatenate([digits[d] for d in order], axis=1)).save(paths[-1])
    return paths


def printed(proc) -> dict[str, str]:
    """``file: text`` lines of omniformer-predict, as a dict."""
    return dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)


# -- what the checkpoint carries -----------------------------------------------------------------------
@pytest.mark.slow
def test_the_checkpoint_carries_the_vocabulary_and_how_media_are_read(audio_ckpt, image_ckpt):
    audio = omniformer.load(audio_ckpt)
    assert audio.kind == "prefix_lm" and audio.modality == "audio"
    assert audio.media_reading == MediaReading("audio", sample_rate=8000)
    assert "".join(audio.vocab.decode(audio.vocab.encode("three nine two"))) == "three nine two"
    image = omniformer.load(image_ckpt)
    assert image.media_reading == MediaReading(
        "image", channels=1, height=28, patch_size=7, mean=MNIST_MEAN, std=MNIST_STD
    )
    assert json.loads(image.artifacts[MEDIA_FILE])["height"] == 28


@pytest.mark.slow
def test_a_file_is_read_as_the_training_data_read_it(image_ckpt, strips, tmp_path):
    reading = omniformer.load(image_ckpt).media_reading
    pixels = read_media_file(strips[1], reading)
    raw = torch.from_numpy(np.array(Image.open(strips[1]))).float()[None] / 255
    assert pixels.shape == (1, 28, 84) and torch.allclose(pixels, (raw - MNIST_MEAN) / MNIST_STD)
    Image.fromarray(np.asarray(Image.open(strips[1]).convert("RGB").resize((168, 56)))).save(
        tmp_path / "big.png"
    )
    assert read_media_file(tmp_path / "big.png", reading).shape == (1, 28, 84)  # gray, resized to 28 high
    clip = read_media_file(CLIPS[0], MediaReading("audio", sample_rate=16000))
    assert clip.ndim == 1 and abs(len(clip) - 2 * sf.info(CLIPS[0]).frames) <= 1  # resampled 8 → 16 kHz


# -- the commands ------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["audio", "image"])
def test_generate_writes_the_text_of_a_clip_or_an_image(kind, audio_ckpt, image_ckpt, strips):
    # in process: omniformer-generate as its own process is tests/test_cli.py's (entry_point)
    ckpt, media = (audio_ckpt, CLIPS[0]) if kind == "audio" else (image_ckpt, strips[1])
    proc = run_main("omniformer.generate", f"ckpt={ckpt}", f"{kind}={media}", "device=cpu")
    model = omniformer.load(ckpt)
    expected = model.generate(**{kind: media})
    assert proc.stdout.rstrip("\n") == expected[0]
    assert set(expected[0]) <= set(model.vocab.decode(range(model.vocab.size)))
    assert expected == model.transcribe([media]) == model.transcribe(media)  # greedy by default


@pytest.mark.slow
def test_generate_starts_the_text_with_the_prompt_and_honours_the_sampling_settings(audio_ckpt):
    args = ["omniformer.generate", f"ckpt={audio_ckpt}", f"audio={CLIPS[1]}", "device=cpu", "prompt='one '"]
    greedy = run_main(*args, "temperature=0", "max_new_tokens=3").stdout.splitlines()
    assert len(greedy) == 1 and greedy[0].startswith("one ") and len(greedy[0]) <= len("one ") + 3
    sampled = run_main(*args, "temperature=2.0", "top_k=0", "num_samples=2", "seed=5").stdout
    assert sampled.count("--- sample") == 2
    model = omniformer.load(audio_ckpt)
    again = model.generate("one ", temperature=2.0, top_k=0, num_samples=2, seed=5, audio=CLIPS[1])
    assert sampled.split("--- sample 2 ---\n")[1].rstrip("\n") == again[1]
    assert again == model.generate("one ", temperature=2.0, top_k=0, num_samples=2, seed=5, audio=CLIPS[1])


@pytest.mark.parametrize("kind", ["audio", "image"])
def test_predict_batches_files_into_the_texts_each_gives_alone(kind, audio_ckpt, image_ckpt, strips):
    ckpt, files = (audio_ckpt, CLIPS[:3]) if kind == "audio" else (image_ckpt, strips)
    model = omniformer.load(ckpt)
    lengths = {tuple(t.shape) for t in model.read_media(files)}
    assert len(lengths) == len(files)  # the batch really pads
    proc = run_main("omniformer.predict", f"ckpt={ckpt}", f"inputs=[{','.join(map(str, files))}]")
    alone = [model.generate(**{kind: f})[0] for f in files]
    assert printed(proc) == {str(f): text for f, text in zip(files, alone)}
    assert model.transcribe(files) == alone
    # a 2-step model writes much the same text for every input: compare what it computes, too
    items = model.read_media(files)
    batched = model.logits(*media_batch(items, model.media_reading))
    one_by_one = torch.cat([model.logits(item[None]) for item in items])
    assert torch.allclose(batched, one_by_one, atol=1e-4)
    assert not torch.allclose(one_by_one[0], one_by_one[1], atol=1e-4)


def test_a_model_folder_generates_what_its_checkpoint_does(audio_ckpt, tmp_path):
    from omniformer.export import export

    export(audio_ckpt, tmp_path / "folder", inputs=[str(CLIPS[0])])
    folder = omniformer.load(tmp_path / "folder")
    assert folder.kind == "prefix_lm" and MEDIA_FILE in folder.artifacts
    assert folder.transcribe(CLIPS[:2]) == omniformer.load(audio_ckpt).transcribe(CLIPS[:2])


# -- bad input: one error naming the culprit -------------------------------------------------------------
# In process only: the same main() a user's command runs, without a Python start-up per refusal (the
# subprocess path of both commands is exercised above).
def bad(*args: str) -> str:
    proc = run_main(*args, check=False)
    assert proc.returncode != 0
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_media_a_model_cannot_read_is_named(audio_ckpt, image_ckpt, tiny_lm_checkpoint, strips):
    out = bad("omniformer.generate", f"ckpt={audio_ckpt}", f"image={strips[0]}")
    assert "image= was given" in out and "reads audio prefixes and has no image tokenizer" in out
    out = bad("omniformer.generate", f"ckpt={image_ckpt}", f"audio={CLIPS[0]}")
    assert "audio= was given" in out and "has no audio tokenizer" in out
    out = bad("omniformer.generate", f"ckpt={tiny_lm_checkpoint}", f"audio={CLIPS[0]}", "device=cpu")
    assert "a language model of text" in out and "with no audio tokenizer" in out
    out = bad("omniformer.generate", f"ckpt={audio_ckpt}", f"audio={CLIPS[0]}", f"image={strips[0]}")
    assert "give audio= or image=, not both" in out
    out = bad("omniformer.generate", f"ckpt={audio_ckpt}")
    assert "give audio=<file>" in out


def test_a_prompt_character_outside_the_vocabulary_is_named(image_ckpt, strips):
    out = bad("omniformer.generate", f"ckpt={image_ckpt}", f"image={strips[0]}", "prompt=3x")
    assert "prompt character 'x'" in out and "is not in the vocabulary" in out


@pytest.mark.slow
def test_a_prefix_longer_than_the_model_is_named(audio_ckpt, image_ckpt, strips, tmp_path):
    wide = tmp_path / "wide.png"  # 20 digits: 16 patches each, 320 tokens
    Image.fromarray(np.tile(np.asarray(Image.open(DIGITS[0])), (1, 20))).save(wide)
    out = bad("omniformer.generate", f"ckpt={image_ckpt}", f"image={wide}")
    assert f"{wide}: its image prefix is 322 tokens, more than model.max_seq_len=128" in out
    long = tmp_path / "long.wav"  # 10 s at 8 kHz: 1001 frames, 4 a token
    sf.write(long, 0.1 * np.random.default_rng(0).standard_normal(80000).astype(np.float32), 8000)
    out = bad("omniformer.predict", f"ckpt={audio_ckpt}", f"inputs=[{CLIPS[0]},{long}]")
    assert f"{long}: its audio prefix is 253 tokens, more than model.max_seq_len=128" in out


@pytest.mark.slow
def test_a_missing_or_unreadable_file_is_named(audio_ckpt, image_ckpt, tmp_path):
    out = bad("omniformer.generate", f"ckpt={audio_ckpt}", f"audio={tmp_path / 'nope.wav'}")
    assert f"audio file {tmp_path / 'nope.wav'} does not exist" in out
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    out = bad("omniformer.predict", f"ckpt={image_ckpt}", f"inputs=[{broken}]")
    assert f"cannot read image file {broken}" in out


@pytest.mark.slow
def test_a_prefix_lm_takes_top_p_and_stop_and_writes_its_texts_to_a_file(audio_ckpt, tmp_path):
    """Issue #17's generation settings and predict output= for a prefix LM."""
    model = omniformer.load(audio_ckpt)
    hot = {"audio": CLIPS[0], "temperature": 2.0, "top_k": 0, "seed": 5, "max_new_tokens": 12}
    sampled = model.generate(**hot)[0]
    assert len(sampled) >= 4  # near-uniform draws from a 2-step model rarely end at once
    assert model.generate(**hot, top_p=0.001)[0] == model.generate(audio=CLIPS[0], max_new_tokens=12)[0]
    stop = sampled[2]
    assert model.generate(**hot, stop=[stop, "\n"])[0] == sampled[: sampled.index(stop)]
    unstopped = model.generate("on", **hot, stop="zzz")[0]  # a stop string never written cuts nothing
    assert unstopped.startswith("on") and unstopped == model.generate("on", **hot)[0]
    with pytest.raises(ValueError, match=r"^top_p="):
        model.generate(**hot, top_p=2)
    out = tmp_path / "texts.csv"
    run_main("omniformer.predict", f"ckpt={audio_ckpt}", f"inputs=[{CLIPS[0]},{CLIPS[1]}]", f"output={out}")
    assert out.read_text().splitlines() == [
        "input,text",
        *(f"{c},{t}" for c, t in zip(CLIPS, model.transcribe(CLIPS[:2]))),
    ]
