"""The prefix LM (task=prefix_lm): loss on text only, metrics from generations, CLI train and eval."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from omniformer.backbone import Backbone
from omniformer.data.paired_batch import PairedBatch
from omniformer.heads import LMHead
from omniformer.model import OmniModel
from omniformer.sequence import SegmentMarkers
from omniformer.tasks.objectives import IGNORE_INDEX, PrefixLMLoss
from omniformer.tasks.optim import OptimSettings
from omniformer.tasks.prefix_lm import PrefixLMTask
from omniformer.tokenizers import AudioSpectrogramTokenizer, ImagePatchTokenizer, TextEmbedding
from omniformer.tokenizers.vocab import CharVocab
from tests.helpers.callbacks import assert_same_curve, interrupted_and_resumed
from tests.helpers.overrides import ON_CPU, TINY_MODEL
from tests.helpers.paths import FIXTURES
from tests.helpers.runs import run_main

DIM = 32
VOCAB = CharVocab("onetwzr ")
EOS = VOCAB.size


def tiny_net(markers: bool = True) -> OmniModel:
    torch.manual_seed(0)
    tokenizers = {
        "audio": AudioSpectrogramTokenizer(
            dim=DIM, sample_rate=8000, n_mels=16, frames_per_token=2, freq_masks=0, time_masks=0
        ),
        "image": ImagePatchTokenizer(in_channels=1, image_size=8, patch_size=4, dim=DIM, cls_token=False),
        "text": TextEmbedding(vocab_size=EOS + 1, dim=DIM),
    }
    backbone = Backbone(dim=DIM, depth=2, heads=4, max_seq_len=128, init="xavier")
    marks = SegmentMarkers(dim=DIM, modalities=["audio", "image"], unmarked=["text"]) if markers else None
    return OmniModel(tokenizers, backbone, {"lm": LMHead(DIM, EOS + 1, tie_to="text")}, markers=marks)


def batch(texts: list[str], lengths: list[int], seed: int = 0) -> PairedBatch:
    g = torch.Generator().manual_seed(seed)
    media = torch.zeros(len(lengths), max(lengths))
    for row, n in enumerate(lengths):
        media[row, :n] = torch.randn(n, generator=g)
    ids = [torch.tensor([*VOCAB.encode(t), EOS]) for t in texts]
    width = max(len(i) for i in ids)
    text = torch.full((len(ids), width), EOS)
    for row, i in enumerate(ids):
        text[row, : len(i)] = i
    return PairedBatch(media, torch.tensor(lengths), text, torch.tensor([len(i) for i in ids]))


def test_the_loss_counts_real_text_ids_only():
    net = tiny_net().eval()
    objective = PrefixLMLoss()
    data = batch(["one", "two zero"], [800, 560])
    loss, logits, targets = objective.step(net, "audio", "lm", data)
    assert logits.shape == (2, data.text.shape[1], EOS + 1)
    assert (targets == IGNORE_INDEX).sum() == 5 and objective.weight(targets) == 4 + 9
    real = targets != IGNORE_INDEX
    assert torch.allclose(loss, F.cross_entropy(logits[real], targets[real]))
    # Other values in the text padding, or in the audio padding, change nothing.
    text = data.text.clone()
    text[0, 4:] = 3
    media = data.media.clone()
    media[1, 560:] = 7.0
    again, _, _ = objective.step(net, "audio", "lm", data._replace(text=text, media=media))
    assert torch.allclose(loss, again, atol=1e-6)


def test_the_prefix_has_no_targets_but_its_tokenizer_learns():
    net = tiny_net().train()
    data = batch(["one", "two"], [800, 800])
    loss, logits, _ = PrefixLMLoss().step(net, "audio", "lm", data)
    # Logits are scored from the end marker on: exactly one column per text id.
    assert logits.shape[1] == data.text.shape[1]
    loss.backward()
    audio = net.tokenizers["audio"]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in audio.parameters())
    assert net.markers.begin["audio"].grad.abs().sum() > 0
    assert net.markers.begin["image"].grad is None  # the image segment is never read


def test_variable_width_images_mask_their_padding_patches():
    net = tiny_net().eval()
    images = torch.rand(2, 1, 8, 16)
    images[1, ..., 8:] = 0
    text = torch.tensor([[0, 1, EOS], [2, EOS, EOS]])
    data = PairedBatch(images, torch.tensor([16, 8]), text, torch.tensor([3, 2]))
    loss, _, _ = PrefixLMLoss().step(net, "image", "lm", data)
    images2 = images.clone()
    images2[1, ..., 8:] = 5.0  # another padding value
    again, _, _ = PrefixLMLoss().step(net, "image", "lm", data._replace(media=images2))
    assert torch.allclose(loss, again, atol=1e-6)


def test_a_model_without_markers_keeps_its_state_dict_keys():
    assert not any(key.startswith("markers.") for key in tiny_net(markers=False).state_dict())
    assert any(key.startswith("markers.begin.") for key in tiny_net().state_dict())


def test_metrics_are_computed_from_generations(monkeypatch):
    task = PrefixLMTask(tiny_net(), OptimSettings(), modality="audio", eos_id=EOS, max_new_tokens=10)
    task.vocab = VOCAB
    data = batch(["one two", "two", "zero one"], [400, 400, 400])
    generated = {"one two": "one two", "two": "twz", "zero one": "zero"}
    monkeypatch.setattr(task.transcriber, "transcribe", lambda *args: list(generated.values()))
    task._evaluate(data, task.val_loss, task.val_metrics)
    scores = task.val_metrics.compute()
    assert scores["val_exact"].item() == pytest.approx(1 / 3)
    assert scores["val_cer"].item() == pytest.approx((0 + 1 + 4) / (7 + 3 + 8))
    assert scores["val_wer"].item() == pytest.approx((0 + 1 + 1) / (2 + 1 + 2))


def test_generations_stop_at_the_end_of_text():
    task = PrefixLMTask(tiny_net(), OptimSettings(), modality="audio", eos_id=EOS, max_new_tokens=6)
    task.vocab = VOCAB
    data = batch(["one", "two"], [800, 400])
    rows = task.generate_ids(data.media, data.media_lengths)
    assert len(rows) == 2 and all(len(r) <= 6 and EOS not in r for r in rows)
    assert task.transcribe(data.media, data.media_lengths) == [VOCAB.decode(r) for r in rows]


def test_a_model_without_the_prefix_tokenizer_is_refused():
    net = tiny_net()
    del net.tokenizers["image"]
    with pytest.raises(ValueError, match=r"no 'image' tokenizer.*prefix=image"):
        PrefixLMTask(net, OptimSettings(), modality="image", eos_id=EOS, max_new_tokens=4)


def manifests(root):
    """Train / val manifests of the bundled FSDD clips (zero, one), in ``root``."""
    clips = root / "clips"
    clips.mkdir()
    for clip in sorted((FIXTURES / "fsdd" / "recordings").glob("*.wav")):
        shutil.copy(clip, clips / clip.name)
    words = {"0": "zero", "1": "one"}

    def write(name, takes):
        rows = [{"audio": f"clips/{d}_theo_{t}.wav", "text": words[d]} for t in takes for d in "01"]
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
        return root / name

    return write("train.jsonl", [5, 6]), write("val.jsonl", [0])


def tiny_run(train, val, *extra):
    return [
        "task=prefix_lm",
        "data=paired",
        f"data.train={train}",
        f"data.val={val}",
        "data.test_fraction=0.25",
        "data.sample_rate=8000",
        "data.batch_size=2",
        *TINY_MODEL,
        "trainer.max_epochs=2",
        *ON_CPU,
        *extra,
    ]


@pytest.mark.slow
def test_train_then_eval_from_the_command_line(tmp_path):
    train, val = manifests(tmp_path)
    run_dir = tmp_path / "run"
    run_main("omniformer.train", *tiny_run(train, val, f"hydra.run.dir={run_dir}"))
    results = json.loads((run_dir / "results.json").read_text())
    for key in ("val_loss", "val_exact", "val_cer", "val_wer", "test_exact", "test_cer", "test_wer"):
        assert key in results
    assert json.loads((run_dir / "vocab.json").read_text())["chars"] == sorted(set("zeroone"))
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    proc = run_main("omniformer.evaluate", f"ckpt={ckpt}", "split=val", "accelerator=cpu")
    for key in ("val_loss", "val_exact", "val_cer", "val_wer"):
        assert f"{key}: " in proc.stdout
    report = json.loads((run_dir / "eval" / "eval.json").read_text())
    assert report["val_cer"] >= 0 and 0 <= report["val_exact"] <= 1


@pytest.mark.slow
def test_an_image_prefix_run_reads_digit_strips(tmp_path):
    import numpy as np
    from PIL import Image

    from omniformer.train import run

    digits = [
        np.asarray(Image.open(p).convert("L")) for p in sorted((FIXTURES / "mnist" / "png").glob("*.png"))
    ]
    labels = ["7", "2"]  # t10k_0_label7, t10k_1_label2
    rows = []
    for i, order in enumerate([[0], [1], [0, 1], [1, 0], [1, 1, 0], [0, 0]]):
        Image.fromarray(np.concatenate([digits[d] for d in order], axis=1)).save(tmp_path / f"s{i}.png")
        rows.append(f"s{i}.png,{' '.join(labels[d] for d in order)}\r\n")
    (tmp_path / "strips.csv").write_text("image,text\r\n" + "".join(rows), newline="")
    overrides = [
        "task=prefix_lm",
        "prefix=image",
        "data=paired",
        f"data.manifest={tmp_path / 'strips.csv'}",
        "data.val_fraction=0.2",
        "data.test_fraction=0.2",
        "data.patch_size=7",
        "data.batch_size=2",
        *TINY_MODEL,
        "trainer.max_epochs=1",
        *ON_CPU,
    ]
    results = run(overrides, tmp_path / "run")
    assert {"val_cer", "val_wer", "val_exact", "test_cer"} <= set(results)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert "net.markers.begin.image" in state and not any(".audio" in key for key in state)


@pytest.mark.slow
def test_a_resumed_run_repeats_the_uninterrupted_losses(tmp_path):
    train, val = manifests(tmp_path)
    # 3 training clips, one per batch: last.ckpt at step 4 is one batch into epoch 1.
    args = tiny_run(
        train,
        val,
        "data.batch_size=1",
        "trainer.max_epochs=3",
        "model.dropout=0.1",
        "callbacks.checkpoint.every_n_train_steps=4",
        "test_after_fit=false",
    )
    full, first, resumed = interrupted_and_resumed(tmp_path, args, crash_step=5)
    assert sorted(full) == list(range(1, 10))
    assert_same_curve(full, first, resumed, resumed_from=4)
