"""Audio end to end: real FSDD clips through training, omniformer-predict and -eval; config composition."""

from __future__ import annotations

import json

import pytest
import soundfile as sf
import torch
import torchaudio
from hydra.utils import instantiate

from omniformer.evaluate import evaluate
from omniformer.predict import predict
from omniformer.viz.spectrogram import save_spectrograms
from tests.helpers.overrides import AUDIO
from tests.helpers.paths import FIXTURES, SHARED_DATA, needs_shared_data
from tests.helpers.runs import compose_train, read_results, run_main

FSDD_FIXTURE = FIXTURES / "fsdd"


@pytest.mark.slow
def test_training_on_real_clips_writes_results_classes_and_sample_rate(tiny_fsdd_run):
    results = read_results(tiny_fsdd_run)
    for key in ("val_acc", "val_f1", "test_acc", "test_loss", "samples_per_sec"):
        assert key in results, key
    assert 0.0 <= results["test_acc"] <= 1.0 and results["steps"] == 2
    assert json.loads((tiny_fsdd_run / "classes.json").read_text()) == ["0", "1"]
    assert json.loads((tiny_fsdd_run / "audio.json").read_text()) == {"sample_rate": 8000}
    checkpoint = torch.load(tiny_fsdd_run / "checkpoints" / "best.ckpt", weights_only=True)
    assert checkpoint["omniformer"]["config"]["data_spec"]["sample_rate"] == 8000
    assert "classes.json" in checkpoint["omniformer"]["artifacts"]


def test_predict_cli_reads_wav_at_another_rate(tiny_fsdd_run, tmp_path):
    """A 44.1 kHz stereo file is mixed and resampled to the checkpoint's 8 kHz before the model sees it."""
    wave, rate = sf.read(FSDD_FIXTURE / "recordings" / "1_theo_0.wav")
    resampled = torchaudio.functional.resample(torch.as_tensor(wave, dtype=torch.float32), rate, 44100)
    sf.write(tmp_path / "one.wav", torch.stack([resampled, resampled], dim=1).numpy(), 44100)
    ckpt = tiny_fsdd_run / "checkpoints" / "best.ckpt"
    clip = FSDD_FIXTURE / "recordings" / "0_theo_0.wav"
    proc = run_main(
        "omniformer.predict", f"ckpt={ckpt}", f"inputs=[{clip},{tmp_path / 'one.wav'}]", "top_k=2"
    )
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(clip))
    for line in lines:
        labels = {part.split()[0] for part in line.split(": ", 1)[1].split(", ")}
        assert labels == {"0", "1"}
    with pytest.raises(ValueError, match=r"clip\.mp3: unsupported audio format '\.mp3'"):
        predict(str(ckpt), [str(tmp_path / "clip.mp3")])
    with pytest.raises(ValueError, match=r"empty\.wav is empty \(0 bytes\)"):
        (tmp_path / "empty.wav").write_bytes(b"")
        predict(str(ckpt), [str(tmp_path / "empty.wav")])


def test_eval_writes_metrics_and_a_spectrogram_figure(tiny_fsdd_run, tmp_path):
    metrics = evaluate(
        str(tiny_fsdd_run / "checkpoints" / "best.ckpt"), out_dir=str(tmp_path), accelerator="cpu"
    )
    assert "test_acc" in metrics
    png = tmp_path / "spectrograms.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "confusion_matrix.png").is_file()


def test_save_spectrograms_draws_fixed_batches_too(tiny_fsdd_run, tmp_path):
    from omniformer.checkpoint import load_checkpoint, task_from_checkpoint

    task = task_from_checkpoint(load_checkpoint(tiny_fsdd_run / "checkpoints" / "best.ckpt"))
    waves = torch.randn(3, 4000) * 0.1
    paths = save_spectrograms(
        task, (waves, torch.tensor([0, 1, 0])), ["0", "1"], tmp_path / "figs", max_clips=2
    )
    assert paths == [tmp_path / "figs" / "spectrograms.png"] and paths[0].is_file()


@pytest.mark.parametrize(
    "overrides",
    [
        ["data=spoken_digits", "data.root=/somewhere/fsdd"],
        ["data=speech_commands", "data.download=true"],
        ["data=audio_folder", "data.root=/my/sounds", "task.net.tokenizers.audio.tokens=patches"],
        ["experiment=spoken_digits", "data.root=/somewhere/fsdd"],
    ],
)
def test_audio_configs_compose_and_build_the_model(overrides):
    cfg = compose_train(["task=audio_classification", *overrides])
    assert cfg.task.modality == "audio"
    assert cfg.callbacks.checkpoint.monitor == "val_acc" and cfg.callbacks.checkpoint.mode == "max"
    # Epoch-limited: a preset's epochs, or (max_epochs null) at least min_epochs and min_steps.
    epochs = cfg.trainer.max_epochs if cfg.trainer.max_epochs is not None else cfg.trainer.min_epochs
    assert cfg.trainer.max_steps == -1 and epochs > 0
    data = instantiate(cfg.data)  # no disk access before setup()
    cfg.data_spec = {
        "num_classes": 12,
        "class_names": [str(i) for i in range(12)],
        "sample_rate": data.sample_rate,
    }
    task = instantiate(cfg.task)
    out = task(torch.zeros(2, data.sample_rate // 2), torch.tensor([data.sample_rate // 2, 800]))
    assert out.shape == (2, 12)


@pytest.mark.slow
@needs_shared_data("fsdd", "recordings")
def test_one_short_epoch_on_the_full_shared_fsdd(tmp_path):
    run_main(  # in process: a Python start-up here would add nothing the subprocess tests lack
        "omniformer.train",
        *AUDIO,
        "data=spoken_digits",
        f"data.root={SHARED_DATA / 'fsdd'}",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        f"hydra.run.dir={tmp_path}",
    )
    results = read_results(tmp_path)
    assert results["steps"] == 4 and "test_acc" in results
