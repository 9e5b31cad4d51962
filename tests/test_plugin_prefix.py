"""A plug-in modality as the prefix of a prefix LM: examples/video's tubelet tokenizer reads clips that
omniformer's paired data module loads through the example's ClipReader (``data.reader``), and the model
writes their text. Nothing inside omniformer/ knows about video."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from omniformer.data.paired_manifest import PairedManifestDataModule
from tests.helpers.overrides import ON_CPU, TINY_MODEL
from tests.helpers.plugin import EXAMPLE, forget_plugin
from tests.helpers.runs import read_results, run_main

SEARCHPATH = f"hydra.searchpath=[file://{EXAMPLE / 'conf'}]"


@pytest.fixture
def video(monkeypatch):
    """The example's package, importable here and in CLI subprocesses (PYTHONPATH=examples/video)."""
    monkeypatch.setenv("PYTHONPATH", str(EXAMPLE))
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import omniformer_video

    yield omniformer_video
    forget_plugin()


def test_clips_are_read_padded_in_time_and_their_padding_masked(video, tmp_path):
    np.save(tmp_path / "a.npy", np.full((3, 16, 16), 255, dtype=np.uint8))
    reader = video.ClipReader(channels=1, frame_multiple=2)
    clip = reader.read(tmp_path / "a.npy")
    assert clip.shape == (3, 1, 16, 16) and clip.dtype == torch.float32 and float(clip.max()) == 1.0
    batch, lengths = reader.pad([clip, torch.zeros(6, 1, 16, 16)])
    assert batch.shape == (2, 6, 1, 16, 16) and lengths.tolist() == [3, 6]
    assert float(batch[0, 3:].abs().sum()) == 0  # zero frames after the short clip
    assert reader.spec(clip) == {"in_channels": 1, "frames": 4, "image_size": [16, 16]}

    tokenizer = video.TubeletTokenizer(32, frames=6, image_size=16, tubelet=[2, 8, 8])
    tokens = tokenizer(batch, lengths)
    # 3 time steps × 2×2 tubelets, time-major; the short clip's frames 0-2 are in time steps 0 and 1
    assert tokens.mask.tolist() == [[True] * 8 + [False] * 4, [True] * 12]
    assert tokenizer(batch).mask is None  # the classification path is unchanged
    with pytest.raises(ValueError, match=r"T×H×W or T×1×H×W"):
        np.save(tmp_path / "b.npy", np.zeros((2, 3, 16, 16)))
        reader.read(tmp_path / "b.npy")


def test_the_paired_manifest_reads_the_readers_column(video, tmp_path):
    manifest = video.write_moving_squares(tmp_path, count=8, frames=(4, 6), size=16)
    data = PairedManifestDataModule(manifest=str(manifest), reader=video.ClipReader(), batch_size=4)
    data.setup("fit")
    spec = data.spec()
    assert spec["modality"] == "video" and spec["image_size"] == [16, 16] and spec["in_channels"] == 1
    batch = next(iter(data.val_dataloader()))
    assert batch.media.ndim == 5 and batch.media.shape[1] % 2 == 0
    # an audio row is not a video row: the error names the reader's column
    (tmp_path / "bad.jsonl").write_text(json.dumps({"audio": "clips/0.npy", "text": "up"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: unknown column mix .* one of 'video'"):
        PairedManifestDataModule(train=str(tmp_path / "bad.jsonl"), reader=video.ClipReader())


@pytest.mark.slow
def test_a_video_prefix_lm_trains_and_generates_from_the_command_line(video, tmp_path):
    """The EXTENDING.md command on generated clips: text loss falls, val_cer is logged (greedy
    generations), and the checkpoint evaluates, generating again, with the plug-in allowed."""
    manifest = video.write_moving_squares(tmp_path / "squares", count=24, frames=(4, 6), size=16)
    run_dir = tmp_path / "run"
    run_main(
        "omniformer.train",
        SEARCHPATH,
        "task=prefix_lm",
        "prefix=video",
        "data=video_pairs",
        f"data.manifest={manifest}",
        "data.val_fraction=0.25",
        "data.test_fraction=0.25",
        "data.batch_size=4",
        *TINY_MODEL,
        "trainer.max_epochs=3",
        "trainer.log_every_n_steps=1",
        *ON_CPU,
        f"hydra.run.dir={run_dir}",
    )
    results = read_results(run_dir)
    for key in ("val_loss", "val_cer", "val_exact", "test_cer", "test_wer"):
        assert math.isfinite(results[key]), key
    rows = list(csv.DictReader((run_dir / "logs" / "metrics.csv").open()))
    val_losses = [float(r["val_loss"]) for r in rows if r.get("val_loss")]
    assert len(val_losses) >= 3 and val_losses[-1] < val_losses[0]
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert "net.tokenizers.video.proj.weight" in state and "net.markers.begin.video" in state
    assert not (run_dir / "media.json").exists()  # audio/image reading settings: none for a plug-in

    ckpt = run_dir / "checkpoints" / "best.ckpt"
    allow = "allow_targets=[omniformer_video]"
    proc = run_main("omniformer.evaluate", f"ckpt={ckpt}", "split=val", "accelerator=cpu", allow)
    assert "val_cer: " in proc.stdout
